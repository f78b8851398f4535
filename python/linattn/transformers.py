"""linattn as the CPU kernel backend of Hugging Face transformers' linear-attention and SSM
models (Qwen3-Next, Qwen3.5, OLMo-hybrid, Kimi-Linear, LFM2, the Mamba families, ...).

    from linattn.transformers import apply_linattn
    apply_linattn()           # models created from now on run their kernels on linattn
    apply_linattn(model)      # or: switch a model that already exists

transformers looks its kernels up once, when a modeling module is imported
(``transformers.integrations.hub_kernels.use_kernel_func_from_hub_with_fallback(func, package)``
wraps the module's torch fallback in a function that calls the package's kernel if the package
is importable). apply_linattn puts a dispatcher in front of each such function: calls whose
tensors are all on the CPU run linattn's kernel of the same name (``_PACKAGES`` maps each
package to the linattn module that carries its names), any other call (CUDA, meta, ...) goes to
what transformers had chosen (the original package's kernel or the torch fallback), untouched.
Modeling modules already imported have their module-level kernel functions replaced (layers
look them up at call time, so existing models switch too); modules imported later are wrapped
as they are imported. ``revert_linattn()`` undoes it. Neither fla, mamba_ssm nor causal_conv1d
need be installed. Importing ``linattn`` does not import this module (nor torch, transformers).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import sys
from typing import Any, Callable

__all__ = ["apply_linattn", "revert_linattn", "linattn_kernel", "runs_on_linattn"]

# The kernel packages transformers looks up and the linattn module with their names.
_PACKAGES = {
    "fla": "linattn.hub.fla",
    "causal_conv1d": "linattn.hub.causal_conv1d",
    "mamba_ssm": "linattn.hub.mamba_ssm",
}
_FACTORY = "use_kernel_func_from_hub_with_fallback"
_MODELS_PREFIX = "transformers.models."

_original_factory: Callable | None = None  # transformers' decorator factory, while patched


def linattn_kernel(package: str, func_name: str) -> Callable | None:
    """linattn's implementation of `package`'s `func_name` (e.g. 'fla', 'chunk_kda'), or None
    where linattn has none (or its module cannot be imported)."""
    module_name = _PACKAGES.get(package)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # a module not there (yet): leave that package to transformers
        return None
    return getattr(module, func_name, None)


def runs_on_linattn(*args, **kwargs) -> bool:
    """Whether a kernel call with these arguments goes to linattn: every tensor among them
    (also inside lists/tuples) is on the CPU. Others (CUDA, meta, ...) keep transformers'
    kernel."""
    import torch

    def on_cpu(x) -> bool:
        if isinstance(x, torch.Tensor):
            return x.device.type == "cpu"
        if isinstance(x, (list, tuple)):
            return all(on_cpu(y) for y in x)
        return True

    return on_cpu(args) and on_cpu(tuple(kwargs.values()))


def _dispatcher(package: str, func_name: str, original: Callable, kernel: Callable) -> Callable:
    """A function that runs `kernel` for CPU tensors and `original` otherwise. Like
    transformers' own wrapper, it passes on only the keywords the kernel names (the models hand
    every kernel their whole keyword set: position_ids, cu_seq_lens_k, ...)."""
    params = inspect.signature(kernel).parameters.values()
    accepted = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @functools.wraps(original)
    def dispatch(*args, **kwargs):
        if not runs_on_linattn(*args, **kwargs):
            return original(*args, **kwargs)
        return kernel(*args, **{k: v for k, v in kwargs.items() if k in accepted})

    dispatch.linattn_kernel = (package, func_name)
    dispatch.linattn_original = original
    return dispatch


def _is_dispatcher(fn: Any) -> bool:
    return callable(fn) and isinstance(getattr(fn, "linattn_kernel", None), tuple)


def _kernel_of(fn: Any) -> tuple[str, str] | None:
    """(package, func_name) of a function made by transformers' factory, read from its closure
    (the factory's wrapper refers to both in its error messages), else None."""
    code, closure = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not closure:
        return None
    cells = dict(zip(code.co_freevars, closure))
    if not {"func_name", "package", "torch_function"} <= cells.keys():
        return None
    try:
        return cells["package"].cell_contents, cells["func_name"].cell_contents
    except ValueError:  # an empty cell
        return None


def _patch_module(module: Any) -> int:
    """Puts a dispatcher in front of each kernel function of one modeling module; returns how
    many functions of it now run on linattn."""
    count = 0
    for name, fn in list(vars(module).items()):
        if _is_dispatcher(fn):
            count += 1
            continue
        found = _kernel_of(fn)
        if found is None or (kernel := linattn_kernel(*found)) is None:
            continue
        setattr(module, name, _dispatcher(*found, fn, kernel))
        count += 1
    return count


def _wrapping_factory(factory: Callable) -> Callable:
    """transformers' decorator factory, with a dispatcher put in front of what it makes (for
    modeling modules imported after apply_linattn)."""

    @functools.wraps(factory)
    def wrapped_factory(func_name: str, package: str, *args, **kwargs):
        decorate = factory(func_name, package, *args, **kwargs)

        def decorator(torch_function):
            made = decorate(torch_function)
            kernel = linattn_kernel(package, func_name)
            return made if kernel is None else _dispatcher(package, func_name, made, kernel)

        return decorator

    return wrapped_factory


def apply_linattn(model: Any = None) -> Any:
    """Routes transformers' kernel look-ups (fla, causal_conv1d, mamba_ssm) to linattn for CPU
    tensors: for every modeling module imported so far and every one imported later. Given a
    model, also makes sure the modules its layers come from are switched (the switch is per
    modeling module: other models of the same classes switch too). Returns the model.
    Calling it again is harmless."""
    global _original_factory
    hub_kernels = importlib.import_module("transformers.integrations.hub_kernels")
    integrations = importlib.import_module("transformers.integrations")
    if _original_factory is None:
        _original_factory = getattr(hub_kernels, _FACTORY)
        patched = _wrapping_factory(_original_factory)
        setattr(hub_kernels, _FACTORY, patched)
        setattr(integrations, _FACTORY, patched)
    names = [n for n in list(sys.modules) if n.startswith(_MODELS_PREFIX)]
    if model is not None:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"apply_linattn: model must be a torch.nn.Module (a transformers "
                            f"model) or None, got {type(model).__name__}")
        names += [type(m).__module__ for m in model.modules()]
    for name in dict.fromkeys(names):
        module = sys.modules.get(name)
        if module is not None:
            _patch_module(module)
    return model


def revert_linattn() -> None:
    """Undoes apply_linattn: every kernel function is transformers' own again, and modules
    imported later are left alone."""
    global _original_factory
    for module_name in [n for n in list(sys.modules) if n.startswith(_MODELS_PREFIX)]:
        module = sys.modules[module_name]
        for name, fn in list(vars(module).items()):
            if _is_dispatcher(fn):
                setattr(module, name, fn.linattn_original)
    if _original_factory is not None:
        for module_name in ("transformers.integrations.hub_kernels", "transformers.integrations"):
            setattr(sys.modules[module_name], _FACTORY, _original_factory)
        _original_factory = None


@contextlib.contextmanager
def linattn_kernels(model: Any = None):
    """apply_linattn(model) for the duration of a with block, revert_linattn() after it (the
    tests and benchmarks compare the two backends on one model this way)."""
    apply_linattn(model)
    try:
        yield model
    finally:
        revert_linattn()
