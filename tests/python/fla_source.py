"""fla (flash-linear-attention) as its released source tells it, without importing fla or triton.

The fla release linattn follows is pinned once, in requirements-dev.txt (``fla-core==X`` and
``flash-linear-attention==X``), which scripts/setup installs into .venv. Everything here reads
the installed .py files: ``signature`` parses a function's ``def`` with ``ast`` (following the
package ``__init__`` re-exports), ``kwargs_keys`` lists the keywords fla's body reads from its
``**kwargs``, and ``load_file`` loads one of fla's pure-torch files (its ``naive`` references)
by path, so fla's Triton kernels are never imported. Bumping the pin and re-running
scripts/setup makes tests/python/test_fla_compat.py show every difference.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements-dev.txt"
DISTRIBUTIONS = ("fla-core", "flash-linear-attention")

# fla's public entry points that linattn provides under the same name: fla module -> names.
# (fla's module paths as users import them; the defining file is found through __init__.)
FLA_FUNCTIONS = {
    "fla.ops.linear_attn": ("chunk_linear_attn", "fused_recurrent_linear_attn"),
    "fla.ops.simple_gla": ("chunk_simple_gla", "fused_recurrent_simple_gla"),
    "fla.ops.retention": ("chunk_retention", "fused_recurrent_retention"),
    "fla.ops.gla": ("chunk_gla", "fused_recurrent_gla"),
    "fla.ops.delta_rule": ("chunk_delta_rule", "fused_recurrent_delta_rule"),
    "fla.ops.gated_delta_rule": ("chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"),
    "fla.ops.gated_delta_product": ("chunk_gated_delta_product",),
    "fla.ops.kda": ("chunk_kda", "fused_recurrent_kda"),
    "fla.ops.generalized_delta_rule": ("chunk_dplr_delta_rule",
                                       "fused_recurrent_dplr_delta_rule"),
    "fla.ops.rwkv7": ("chunk_rwkv7", "fused_recurrent_rwkv7"),
    "fla.ops.attn": ("parallel_attn",),
    "fla.modules.causal_conv1d": ("causal_conv1d", "causal_conv1d_update"),
}


def pinned_version() -> str:
    """The fla version of requirements-dev.txt (both distributions pinned to the same one)."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s#;]+).*", line)
        if m and m.group(1).lower() in DISTRIBUTIONS:
            pins[m.group(1).lower()] = m.group(2)
    if set(pins) != set(DISTRIBUTIONS) or len(set(pins.values())) != 1:
        raise RuntimeError(f"{REQUIREMENTS}: expected {' and '.join(DISTRIBUTIONS)} pinned to "
                           f"one version (name==X), found {pins}")
    return next(iter(pins.values()))


def installed_version() -> str | None:
    """fla-core's installed version, or None when it is not installed."""
    try:
        return importlib.metadata.version("fla-core")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_installed() -> str | None:
    """None when the pinned fla is installed, else why not (for pytest.skip / fail)."""
    have, want = installed_version(), pinned_version()
    if have is None:
        return f"fla-core {want} is not installed: run scripts/setup"
    if have != want:
        return (f"fla-core {have} is installed but requirements-dev.txt pins {want}: "
                "run scripts/setup")
    return None


def source_root() -> pathlib.Path:
    """The directory that holds the installed ``fla`` package (not imported)."""
    dist = importlib.metadata.distribution("fla-core")
    return pathlib.Path(dist.locate_file("fla")).resolve().parent


def _module_file(module: str) -> pathlib.Path:
    path = source_root().joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _parse(module: str) -> ast.Module:
    return ast.parse(_module_file(module).read_text(), str(_module_file(module)))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module
    package = module if _module_file(module).name == "__init__.py" else module.rsplit(".", 1)[0]
    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def find_def(module: str, name: str) -> tuple[str, ast.FunctionDef]:
    """(defining module, the function's ast) of `name` as importable from `module`."""
    for node in _parse(module).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return module, node
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return find_def(_absolute(module, node), alias.name)
    raise LookupError(f"{name} is not defined in fla's {module} ({_module_file(module)})")


MISSING = object()  # a parameter without a default


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str  # 'positional' (positional-or-keyword), 'keyword' (keyword-only), '*', '**'
    default: object = MISSING

    def text(self) -> str:
        prefix = {"*": "*", "**": "**"}.get(self.kind, "")
        default = "" if self.default is MISSING else f"={self.default!r}"
        return f"{prefix}{self.name}{default}"


def signature(module: str, name: str) -> list[Param]:
    """fla's parameter list of `module`.`name`, defaults evaluated as Python literals."""
    args = find_def(module, name)[1].args
    positional = args.posonlyargs + args.args
    defaults = [MISSING] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [Param(a.arg, "positional", _literal(d)) for a, d in zip(positional, defaults)]
    if args.vararg:
        params.append(Param(args.vararg.arg, "*"))
    params += [Param(a.arg, "keyword", _literal(d))
               for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append(Param(args.kwarg.arg, "**"))
    return params


def _literal(node):
    return MISSING if node is MISSING or node is None else ast.literal_eval(node)


def kwargs_keys(module: str, name: str) -> list[str]:
    """The keywords fla's body reads from its ``**kwargs`` (``kwargs.get('x')``,
    ``kwargs.pop('x')``, ``kwargs['x']``, ``'x' in kwargs``): fla's undeclared parameters."""
    fn = find_def(module, name)[1]
    if fn.args.kwarg is None:
        return []
    var, keys = fn.args.kwarg.arg, set()
    for node in ast.walk(fn):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == var
                and node.func.attr in ("get", "pop") and node.args
                and isinstance(node.args[0], ast.Constant)):
            keys.add(node.args[0].value)
        elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant)
              and any(isinstance(c, ast.Name) and c.id == var for c in node.comparators)):
            keys.add(node.left.value)
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
              and node.value.id == var and isinstance(node.slice, ast.Constant)):
            keys.add(node.slice.value)
    return sorted(keys)


def load_file(relative: str):
    """One of fla's source files (e.g. 'fla/ops/gla/naive.py') loaded as a private module by
    path: fla's package __init__ (which imports the Triton kernels) is not run. Only for files
    whose imports are torch, einops and the like."""
    path = source_root() / relative
    name = "_fla_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
