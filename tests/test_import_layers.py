"""Dependencies run one way: no upward import between layers, no import cycle (docs/ARCHITECTURE.md).

Every ``import`` / ``from ... import`` of every file in detptq/ and tools/ is
read with ``ast`` (relative imports resolved; imports inside functions count
too: a lazy import hides a dependency but does not remove it).
"""
import ast
import os
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: lowest first; a module may import from lower layers and from its own package only
LAYERS: List[Tuple[str, ...]] = [
    ('detptq', 'detptq.registry', 'detptq.version', 'detptq.utils'),
    ('detptq.models', 'detptq.datasets'),
    ('detptq.quantization', ),
    ('detptq.reconstruction', ),
    ('detptq.analysis', 'detptq.export'),
    ('detptq.engine', ),
    ('tools', ),
]
#: packages of the bottom layer form one foundation and may import each other
FOUNDATION = 0

Import = Tuple[str, int, str]  # (importing file, line, imported module)


def module_files() -> Dict[str, str]:
    """{dotted module name: file path} of every .py file in detptq/ and tools/."""
    found = {}
    for top in ('detptq', 'tools'):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(dirpath, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                    if dotted.endswith('.__init__'):
                        dotted = dotted[:-len('.__init__')]
                    found[dotted] = path
    return found


def imports_of(module: str, source: str, known: Set[str], is_package: bool) -> List[Tuple[int, str]]:
    """(line, imported module) for every project import in ``source``, relative ones resolved."""
    package = module if is_package else module.rpartition('.')[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1])
                target = f'{base}.{node.module}' if node.module else base
            else:
                target = node.module or ''
            found.append((node.lineno, target))
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule too
                sub = f'{target}.{alias.name}'
                if sub in known:
                    found.append((node.lineno, sub))
    return [(line, t) for line, t in found if t.split('.')[0] in ('detptq', 'tools')]


def all_imports() -> List[Import]:
    """Every project import of every project file."""
    files = module_files()
    known = set(files)
    result = []
    for module, path in sorted(files.items()):
        with open(path) as f:
            source = f.read()
        for line, target in imports_of(module, source, known, path.endswith('__init__.py')):
            result.append((module, line, target))
    return result


def package_of(module: str) -> Optional[Tuple[int, str]]:
    """(layer index, package prefix) of a module: the longest prefix listed in LAYERS."""
    best = None
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + '.'):
                if best is None or len(package) > len(best[1]):
                    best = (index, package)
    return best


def layer_violation(module: str, target: str) -> Optional[str]:
    """Why ``module`` may not import ``target``, or None when the import runs downwards."""
    src, dst = package_of(module), package_of(target)
    if src is None or dst is None:
        return f'{module if src is None else target} is in no layer of LAYERS'
    if src[1] == dst[1] or dst[0] < src[0] or src[0] == dst[0] == FOUNDATION:
        return None
    kind = 'a peer' if src[0] == dst[0] else 'a higher layer'
    return f'{src[1]} may not import {dst[1]} ({kind})'


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle of ``graph`` as [m1, m2, ..., m1], or None."""
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_every_package_has_a_layer():
    missing = sorted({m for m in module_files() if package_of(m) is None})
    assert not missing, f'modules in no layer (add their package to LAYERS): {missing}'


def test_no_upward_or_peer_import():
    files = module_files()
    bad = []
    for module, line, target in all_imports():
        why = layer_violation(module, target)
        if why:
            path = os.path.relpath(files[module], ROOT)
            bad.append(f'{path}:{line} imports {target}: {why}')
    assert not bad, 'imports against the layering ' + ' < '.join(
        '/'.join(p.split('.')[-1] for p in layer) for layer in LAYERS) + ':\n' + '\n'.join(bad)


def test_no_import_cycle():
    graph: Dict[str, Set[str]] = {}
    lines = {}
    for module, line, target in all_imports():
        if target != module:
            graph.setdefault(module, set()).add(target)
            lines[(module, target)] = line
    cycle = find_cycle(graph)
    if cycle:
        files = module_files()
        steps = [f'{os.path.relpath(files[a], ROOT)}:{lines[(a, b)]} imports {b}'
                 for a, b in zip(cycle, cycle[1:])]
        pytest.fail('circular import:\n' + '\n'.join(steps))


def test_checker_catches_upward_lazy_and_relative_imports():
    known = {'detptq.quantization.quantizer', 'detptq.quantization.calibrators',
             'detptq.engine.evaluation'}
    source = ('from .calibrators import base\n'
              'def f():\n'
              '    from detptq.engine.evaluation import evaluate\n')
    found = imports_of('detptq.quantization.quantizer', source, known, is_package=False)
    assert found == [(1, 'detptq.quantization.calibrators'), (3, 'detptq.engine.evaluation')]
    found = imports_of('detptq.engine.loops', 'from detptq.quantization import calibrators', known,
                       is_package=True)
    assert found == [(1, 'detptq.quantization'), (1, 'detptq.quantization.calibrators')]
    assert layer_violation('detptq.quantization.quantizer', 'detptq.engine.evaluation')
    assert layer_violation('detptq.export.verify', 'detptq.analysis.sensitivity')  # peers
    assert layer_violation('detptq.engine.loops', 'detptq.quantization') is None
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': {'c'}}) is None
