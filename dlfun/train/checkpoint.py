"""Checkpoints with orbax: atomic, the last N kept, corrupt ones skipped, wrong shapes refused.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed mid-write never leaves a half-written checkpoint that looks finished. Saves are
asynchronous; :meth:`Checkpointer.wait` (called by ``close``) blocks until they are on disk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from ..errors import CheckpointError

log = logging.getLogger(__name__)


def _state_dict(state: Any) -> dict:
    """A checkpointable nested dict of ``state``'s arrays (static fields dropped)."""
    return serialization.to_state_dict(state)


def _flat_shapes(tree: Any) -> dict[str, tuple]:
    """``{"a/b/c": shape}`` for every array leaf of a nested dict / metadata tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path):
            tuple(leaf.shape) for path, leaf in flat if hasattr(leaf, "shape")}


def _placed_like(template: Any, restored: Any) -> Any:
    """``restored`` placed as ``template`` was: orbax hands back arrays committed to a device,
    and a state whose arrays were free to move (as ``init`` makes them) compiles the training
    step under another cache key than a committed one, so a resumed run compiled its step
    again (seconds, once per resume). Uncommitted templates get uncommitted arrays back."""
    if isinstance(template, jax.Array) and not template.committed and isinstance(
            restored, jax.Array):
        return jax.device_put(np.asarray(restored))
    return restored


class Checkpointer:
    """Save and restore a training-state pytree plus JSON metadata under ``directory``.

    Args:
      directory: folder for this state's checkpoints (created on first save).
      keep: how many of the newest checkpoints to keep.
      process_local: in a multi-process job, let this process save and restore host arrays
        on its own (orbax then synchronises with no other process). The parallel experiments
        gather the state on every process, write it from process 0, and read it back on each.
    """

    def __init__(self, directory: str | Path, keep: int = 3, process_local: bool = False):
        import orbax.checkpoint as ocp  # imported here: orbax starts threads on import

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        extra = dict(create=True)
        if process_local and jax.process_count() > 1:
            me = jax.process_index()
            self.directory.mkdir(parents=True, exist_ok=True)  # orbax will not, in this mode
            extra = dict(create=False, multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, **extra)
        handlers = {"state": ocp.StandardCheckpointHandler(),
                    "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=handlers)

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def is_complete(self, step: int) -> bool:
        """Whether the folder of ``step`` still has all a finished save wrote: orbax's
        checkpoint metadata and both items (a kill while orbax deletes an old checkpoint, when
        it rotates to keep the last N, leaves a half-deleted folder that still counts as a
        step)."""
        if not (self.directory / str(step) / "_CHECKPOINT_METADATA").is_file():
            return False
        try:
            items = self._manager.item_metadata(step)
            items["state"], items["meta"]  # noqa: B018 (a missing item raises)
        except Exception:
            return False
        return True

    def remove(self, step: int) -> None:
        """Delete the folder of ``step`` (e.g. one that is not :meth:`is_complete`)."""
        import shutil

        shutil.rmtree(self.directory / str(step))
        self._manager.reload()

    def reload(self) -> None:
        """Forget what orbax knew of the folder (after a checkpoint was moved away)."""
        self._manager.reload()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Start saving ``state`` (any pytree, e.g. a TrainState) and ``meta`` at ``step``."""
        args = self._ocp.args
        self._manager.save(step, args=args.Composite(
            state=args.StandardSave(_state_dict(state)), meta=args.JsonSave(meta)), force=True)

    def restore_latest(self, template: Any) -> tuple[Any, dict, int] | None:
        """Restore the newest readable checkpoint into the structure of ``template``.

        A checkpoint that fails to read (e.g. a truncated file) is reported in the log and the
        next older one is tried.

        Returns:
          ``(state, meta, step)``, or ``None`` if there is no checkpoint at all.
        Raises:
          CheckpointError: if checkpoints exist but none is readable, or their array shapes
            differ from ``template``'s (a different configuration).
        """
        steps = self.steps()
        if not steps:
            return None
        errors = []
        for step in reversed(steps):
            try:
                return (*self.restore(step, template), step)
            except CheckpointError:
                raise
            except Exception as e:  # orbax raises many types for unreadable files
                log.warning("checkpoint %s/%d is unreadable (%s: %s); trying an older one",
                            self.directory, step, type(e).__name__, str(e)[:200])
                errors.append(f"{step}: {type(e).__name__}")
        raise CheckpointError(f"no readable checkpoint in {self.directory} (tried "
                              f"{', '.join(errors)}); start a new run with another --run-dir")

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """``(state, meta)`` of the checkpoint at ``step``, in the structure of ``template``.

        Raises:
          CheckpointError: its arrays differ in shape from ``template``'s.
          Exception: whatever orbax raises for an unreadable checkpoint.
        """
        self._check_shapes(step, template)
        args = self._ocp.args
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                _state_dict(template))
        out = self._manager.restore(step, args=args.Composite(
            state=args.StandardRestore(abstract), meta=args.JsonRestore()))
        state = serialization.from_state_dict(template, out["state"])
        return jax.tree.map(_placed_like, template, state), dict(out["meta"])

    def _check_shapes(self, step: int, template: Any) -> None:
        """Refuse a checkpoint whose arrays differ in shape from ``template``'s."""
        try:
            saved = _flat_shapes(self._manager.item_metadata(step)["state"])
        except Exception:  # unreadable metadata: let the restore attempt report it
            return
        wanted = _flat_shapes(_state_dict(template))
        # parameters first: they name the layer whose configuration changed
        names = sorted(set(saved) | set(wanted), key=lambda n: (not n.startswith("params"), n))
        for name in names:
            if saved.get(name) != wanted.get(name):
                raise CheckpointError(
                    f"checkpoint {self.directory}/{step} is from a different configuration: "
                    f"{name} has shape {saved.get(name, 'missing')} there but "
                    f"{wanted.get(name, 'missing')} here; resume with the settings of that run "
                    f"(see its config.json) or use a new --run-dir")

    def load_raw(self, step: int | None = None) -> tuple[dict, dict]:
        """The saved arrays (nested dict of numpy arrays) and metadata at ``step`` (default:
        the newest), without a template: for comparing runs and inspecting checkpoints."""
        step = self.steps()[-1] if step is None else step
        out = self._manager.restore(step)
        return jax.tree.map(np.asarray, dict(out["state"])), dict(out["meta"])

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()
