"""Small JSON record of a run's finished steps, so an interrupted run resumes."""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Optional


class RunState:
    """Key/value store in ``work_dir/run_state.json``, written atomically after each step.

    A value is kept only while the run's ``signature`` (config + checkpoint)
    is unchanged; a different signature starts afresh.
    """

    def __init__(self, work_dir: str, signature: str) -> None:
        self.path = osp.join(work_dir, 'run_state.json')
        self.signature = signature
        self.values: dict = {}
        if osp.isfile(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            if saved.get('signature') == signature:
                self.values = saved.get('values', {})

    def get(self, key: str) -> Optional[Any]:
        """The value stored for ``key`` by an earlier run, or None."""
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` and write the file at once."""
        self.values[key] = value
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'signature': self.signature, 'values': self.values},
                      f, indent=2)
        os.replace(tmp, self.path)
