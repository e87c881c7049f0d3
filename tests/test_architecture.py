"""The house's rules, checked from the source: no import cycle in the engine (function-level
imports included), the engine never imports Streamlit, and no engine file grows past ~400 lines."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "explainers"
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that ``name`` imports, at module level or inside a function."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - (node.level - 1)]
                mod = ".".join(stem + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import explainers.a.b` where only a is a module, etc.
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {n: _imports(n, p, modules) for n, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_engine_has_no_import_cycle():
    graph = import_graph()
    # The package's own __init__ re-exports the API (it imports everything; nothing imports it back).
    graph = {k: {t for t in v if t != "explainers"} for k, v in graph.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_layers_point_one_way():
    """methods never import training; core never imports methods; data imports nothing above it."""
    graph = import_graph()
    def below(prefix):
        return {m for m in graph if m == prefix or m.startswith(prefix + ".")}
    for src, banned in [("explainers.methods", "explainers.training"), ("explainers.core", "explainers.methods"),
                        ("explainers.classifiers", "explainers.methods"), ("explainers.data", "explainers.classifiers"),
                        ("explainers.fitted", "explainers.methods")]:
        for m in below(src):
            bad = {t for t in graph[m] if t == banned or t.startswith(banned + ".")}
            assert not bad, f"{m} imports {sorted(bad)}"


def test_the_engine_never_imports_streamlit():
    for p in PKG.rglob("*.py"):
        tree = ast.parse(p.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(x.split(".")[0] == "streamlit" for x in names), p


def test_no_engine_file_is_too_long():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_ray_is_imported_only_inside_evaluation_ray_functions():
    """Ray is for ``evaluate --ray``: only explainers/evaluation_ray.py imports it, and only inside a
    function, so the app, the engine and the command line start without it."""
    files = [*PKG.rglob("*.py"), ROOT / "app.py", *(ROOT / "ui").rglob("*.py"), *(ROOT / "pages").rglob("*.py")]
    for p in files:
        tree = ast.parse(p.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        every = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]

        def rays(nodes):
            names = [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in nodes if isinstance(n, ast.ImportFrom) and not n.level]
            return [x for x in names if x.split(".")[0] == "ray"]

        assert not rays(top), f"{p} imports ray at module level"
        if p != PKG / "evaluation_ray.py":
            assert not rays(every), f"{p} imports ray (only explainers/evaluation_ray.py may)"
    assert rays_in(PKG / "evaluation_ray.py")  # the rule looks at the right file


def rays_in(path: Path) -> bool:
    return any(isinstance(n, ast.Import) and any(a.name.split(".")[0] == "ray" for a in n.names)
               for n in ast.walk(ast.parse(path.read_text())))
