"""Which files of a folder the demo generator wrote, and what it may therefore do there.

The generator never deletes or overwrites a file it cannot prove it wrote.
Proof is its own ``manifest.json`` (written before the first image, so an
interrupted run is still recognised) plus file names it would write itself:
``images/<split>/NNNNNN.jpg`` below the split's image count and
``annotations/instances_<split>.json``. Anything else is *foreign*.

:func:`plan_generation` turns what is found into the splits to (re)build,
or raises :class:`DemoDataError` with one sentence naming the folder.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from detptq.utils.cli import UserInputError

MANIFEST = 'manifest.json'
LOCK_FILE = '.generate.lock'  # written by generator version 1; harmless, still ours
COMMON_KEYS = ('generator_version', 'seed', 'img_size', 'classes')
_IMAGE_NAME = re.compile(r'^(\d{6})\.jpg$')


class DemoDataError(UserInputError):
    """The demo generator refuses to touch a folder; the message names it and says why."""


def read_manifest(root: Path) -> Optional[dict]:
    """The generator's manifest in ``root``, or None if there is none (or it is not ours)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not all(k in manifest for k in COMMON_KEYS):
        return None
    return manifest


def split_count(manifest: Optional[dict], split: str) -> Optional[int]:
    """Images the manifest asks of ``split`` (None: the manifest has no such split)."""
    if manifest is None:
        return None
    value = manifest.get(f'num_{split}')
    return value if isinstance(value, int) else None


def foreign_entries(root: Path, manifest: Optional[dict], wanted: Dict[str, int],
                    limit: int = 3) -> List[str]:
    """Up to ``limit`` paths (relative to root) the generator did not write."""
    found: List[str] = []
    allowed_top = {MANIFEST, MANIFEST + '.tmp', LOCK_FILE, 'annotations', 'images'}
    ann_names = set()
    for split in wanted:
        ann_names |= {f'instances_{split}.json', f'instances_{split}.json.tmp'}
    for entry in os.scandir(root):
        if entry.name not in allowed_top:
            found.append(entry.name)
    if (root / 'annotations').is_dir():
        found += [f'annotations/{e.name}' for e in os.scandir(root / 'annotations')
                  if e.name not in ann_names or not e.is_file()]
    elif (root / 'annotations').exists():
        found.append('annotations')
    images = root / 'images'
    if images.is_dir():
        for entry in os.scandir(images):
            if entry.name not in wanted or not entry.is_dir():
                found.append(f'images/{entry.name}')
                continue
            limit_index = max(wanted[entry.name], split_count(manifest, entry.name) or 0)
            for image in os.scandir(entry.path):
                match = _IMAGE_NAME.match(image.name)
                if not match or int(match.group(1)) >= limit_index or not image.is_file():
                    found.append(f'images/{entry.name}/{image.name}')
                    if len(found) >= limit:
                        break
    elif images.exists():
        found.append('images')
    return sorted(found)[:limit]


def missing_files(root: Path, split: str, count: int) -> List[str]:
    """Files of a finished split (its annotation file and ``count`` images) that are absent or empty."""
    missing = []
    ann = root / 'annotations' / f'instances_{split}.json'
    if not ann.is_file():
        missing.append(str(ann.relative_to(root)))
    folder = root / 'images' / split
    present = set()
    if folder.is_dir():
        present = {e.name for e in os.scandir(folder) if e.is_file() and e.stat().st_size > 0}
    missing += [f'images/{split}/{i:06d}.jpg' for i in range(count)
                if f'{i:06d}.jpg' not in present]
    return missing


@dataclass
class GenerationPlan:
    """What the generator will do in a folder."""
    root: Path
    build: List[str] = field(default_factory=list)     # splits to (re)generate
    keep: List[str] = field(default_factory=list)      # finished splits left untouched
    reason: str = ''                                   # one log line ('' when nothing to do)
    loud: bool = False                                 # log as a warning (files were missing)
    old_manifest: Optional[dict] = None


def _settings_text(values: dict) -> str:
    return ', '.join(f'{k}={v}' for k, v in values.items())


def plan_generation(root: Path, params: dict, splits: Dict[str, int],
                    force: bool = False, only: Optional[Iterable[str]] = None) -> GenerationPlan:
    """Decide which splits to build in ``root`` for ``params``; refuse (DemoDataError) when unsafe.

    ``params`` holds the common settings (COMMON_KEYS), ``splits`` the wanted
    image count per split. ``only`` (default: all) names the splits the caller
    needs now; the others are left as they are, built or not (a PTQ run needs
    no training images). ``force`` replaces a data set the generator made
    with other settings (still never a foreign file).
    """
    needed = set(splits if only is None else only)
    plan = GenerationPlan(root=root)
    if root.exists() and not root.is_dir():
        raise DemoDataError(f'{root} is a file, not a folder; choose another folder for the '
                            'demo data set')
    entries = [e.name for e in os.scandir(root) if e.name != LOCK_FILE] if root.is_dir() else []
    if not entries:
        plan.build = [s for s in splits if s in needed]
        plan.reason = (f'generating the demo data set in {root} ('
                       + ', '.join(f'{s} {splits[s]}' for s in plan.build) + ' images)')
        return plan
    manifest = read_manifest(root)
    plan.old_manifest = manifest
    if manifest is None:
        raise DemoDataError(
            f'{root} is not empty and was not written by the demo generator (no {MANIFEST}); '
            'refusing to write there: give an empty or new folder, or point the run at your '
            'own data set')
    foreign = foreign_entries(root, manifest, splits)
    if foreign:
        raise DemoDataError(
            f'{root} holds files the demo generator did not write ({", ".join(foreign)}); '
            'refusing to write there: move them away or use another folder')
    differ = {k: manifest.get(k) for k in params if manifest.get(k) != params[k]}
    differ.update({f'num_{s}': split_count(manifest, s) for s, n in splits.items()
                   if split_count(manifest, s) not in (None, n)})
    if differ and not force:
        wanted = {k: params[k] for k in differ if k in params}
        wanted.update({k: splits[k[4:]] for k in differ if k.startswith('num_')})
        raise DemoDataError(
            f'{root} holds a demo data set generated with {_settings_text(differ)}, but '
            f'{_settings_text(wanted)} is asked for; refusing to replace it: run '
            f'`python tools/make_demo_data.py --out {root} --force` to regenerate it, or use '
            'another folder')
    if differ:
        plan.build = list(splits)
        plan.reason = (f'replacing the demo data set in {root} (--force): it was generated '
                       f'with {_settings_text(differ)}')
        return plan
    finished = manifest.get('files') or {}
    broken = []
    for split, count in splits.items():
        if split not in needed:  # not checked now: checked when a run needs it
            if split in finished:
                plan.keep.append(split)
        elif force:
            plan.build.append(split)
        elif split not in finished:
            plan.build.append(split)
        else:
            gone = missing_files(root, split, count)
            if gone:
                broken.append(f'{split}: {len(gone)} file(s) missing, e.g. {gone[0]}')
                plan.build.append(split)
            else:
                plan.keep.append(split)
    if broken:
        plan.loud = True
        plan.reason = (f'the demo data set in {root} is incomplete ({"; ".join(broken)}); '
                       f'regenerating split(s) {", ".join(plan.build)} from its manifest '
                       '(same seed: the same bytes)')
    elif plan.build:
        plan.reason = (f'regenerating (--force) split(s) {", ".join(plan.build)} in {root}'
                       if force else f'generating split(s) {", ".join(plan.build)} of the '
                       f'demo data set in {root} (new, or unfinished before)')
    return plan


def remove_split_files(root: Path, split: str, counts: List[Optional[int]]) -> None:
    """Delete the files the generator wrote for ``split`` (never the folder, never other files)."""
    (root / 'annotations' / f'instances_{split}.json').unlink(missing_ok=True)
    folder = root / 'images' / split
    limit = max([c for c in counts if c is not None] or [0])
    for i in range(limit):
        (folder / f'{i:06d}.jpg').unlink(missing_ok=True)
