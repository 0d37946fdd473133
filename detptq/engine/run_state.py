"""The resume record of a PTQ run: ``WORK_DIR/run_state.json``.

It holds the run's fingerprint and the wall time of every invocation that
worked on the same inputs in this work dir, so a run resumed after an
interruption reports the time of all its invocations, not only the last.
The current invocation's time is written at every step the loop reports and
by a background timer every ``tick_seconds``, atomically, so a kill loses at
most that much. Other facts may be noted (e.g. the FP-metrics fingerprint,
to say why the FP cache missed). In a distributed run only the main process
writes the file.
"""
from __future__ import annotations

import json
import logging
import os.path as osp
import threading
import time
from typing import Any, Dict, Optional

from mmengine.dist import is_main_process
from mmengine.logging import print_log

from detptq.utils.fingerprint import Fingerprint
from detptq.utils.io import write_json_atomic

RUN_STATE_JSON = 'run_state.json'


class RunState:
    """Invocations and notes of one run in ``work_dir`` (see the module docstring)."""

    def __init__(self, work_dir: str, fingerprint: Fingerprint,
                 tick_seconds: float = 15.0) -> None:
        self.path = osp.join(work_dir, RUN_STATE_JSON)
        self.fingerprint = fingerprint
        self.tick_seconds = tick_seconds
        self.data: Dict[str, Any] = self._load_previous()
        self.started = time.time()
        self.data['invocations'].append(dict(
            started=time.strftime('%Y-%m-%dT%H:%M:%S'), seconds=0.0))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick_loop, daemon=True)
        self.tick()
        self._timer.start()

    def _load_previous(self) -> Dict[str, Any]:
        fresh = dict(fingerprint=self.fingerprint.digest,
                     fingerprint_parts=self.fingerprint.parts, invocations=[], notes={})
        if not osp.isfile(self.path):
            return fresh
        try:
            with open(self.path) as f:
                data = json.load(f)
            stored = data['fingerprint_parts']
            list(data['invocations'])
        except (OSError, ValueError, KeyError, TypeError) as err:
            print_log(f'run state {self.path} is unreadable ({err}); wall time starts again',
                      logger='current', level=logging.WARNING)
            return fresh
        if data.get('fingerprint') != self.fingerprint.digest:
            print_log(f'run state: earlier invocations in this work dir had other inputs '
                      f'({self.fingerprint.explain(stored)}); wall time starts again',
                      logger='current')
            fresh['notes'] = data.get('notes') or {}  # still useful to explain cache misses
            return fresh
        data.setdefault('notes', {})
        return data

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            self.tick()

    def tick(self) -> None:
        """Record the current invocation's time so far."""
        with self._lock:
            self.data['invocations'][-1]['seconds'] = round(time.time() - self.started, 3)
            if is_main_process():  # one writer
                write_json_atomic(self.data, self.path, indent=1)

    def note(self, **facts: Any) -> None:
        """Remember facts for the next invocation (written with the next tick)."""
        with self._lock:
            self.data['notes'].update(facts)
        self.tick()

    def noted(self, key: str) -> Optional[Any]:
        """A fact noted by this or an earlier invocation, or None."""
        return self.data['notes'].get(key)

    @property
    def invocations(self) -> int:
        """How many invocations (this one included) worked on this run."""
        return len(self.data['invocations'])

    def total_seconds(self) -> float:
        """Wall time of all invocations, this one up to now."""
        self.tick()
        return sum(inv['seconds'] for inv in self.data['invocations'])

    def close(self) -> None:
        """Stop the timer and write the final time."""
        self._stop.set()
        self._timer.join()
        self.tick()
