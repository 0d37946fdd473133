"""Run a tool and list every file this process creates or replaces under watched folders.

    python tests/write_audit.py TOOL.py ARGS...     (torchrun runs it once per rank)

``$WRITE_AUDIT_DIRS`` (os.pathsep-separated folders) are watched; the list goes
to ``$WRITE_AUDIT_OUT.rank<RANK>`` at exit, one path per line. A Python audit
hook sees every ``open`` for writing (also ``os.open``, which the atomic
writers use through ``mkstemp``) and every rename, so tests/test_distributed.py
can check that only rank 0 writes (the "one writer" rule).
"""
import atexit
import os
import runpy
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _writes(event: str, args: tuple):
    """The path an audit event writes to, or None."""
    if event == 'open':
        path, mode, flags = args
        if mode is not None:
            return path if any(c in mode for c in 'wax+') else None
        return path if flags & WRITE_FLAGS else None
    if event in ('os.rename', 'os.replace'):
        return args[1]
    return None


def main() -> None:
    """Install the hook, then run ``sys.argv[1]`` as ``__main__`` with the remaining arguments."""
    watched = [os.path.abspath(d) + os.sep for d in
               os.environ['WRITE_AUDIT_DIRS'].split(os.pathsep) if d]
    out = f"{os.environ['WRITE_AUDIT_OUT']}.rank{os.environ.get('RANK', '0')}"
    written = set()

    def hook(event: str, args: tuple) -> None:
        path = _writes(event, args)
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if any(path.startswith(w) for w in watched):
                written.add(path)

    def report() -> None:
        lines = sorted(written)
        with open(out, 'w') as f:  # not under a watched folder
            f.writelines(p + '\n' for p in lines)

    atexit.register(report)
    sys.addaudithook(hook)
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name='__main__')


if __name__ == '__main__':
    main()
