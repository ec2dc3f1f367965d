"""LangGraph checkpoints kept in memory for speed and written through to the store.

Reads come from memory; each `put`/`put_writes` is also queued on the store
(its batch writer), so concurrent runs share commits. Before a node with side
effects starts, the engine awaits `store.flush()`: nothing that completed
before it can be lost to a crash, yet a chain of pure transforms costs one
commit per batch instead of one per step. A run's thread is loaded from the
store on first access (resume after a restart, on any process) and evicted
when the run stops. Any store of the contract can keep it: `store.checkpointer()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP, ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver

if TYPE_CHECKING:
    from agentflow.store.base import CheckpointStore


class DurableSaver(InMemorySaver):
    def __init__(self, store: CheckpointStore) -> None:
        super().__init__()
        self.store = store
        self._loaded: set[str] = set()
        # thread id -> its keys in self.writes / self.blobs, so eviction need not scan every run's keys
        self._write_keys: dict[str, set[Any]] = {}
        self._blob_keys: dict[str, set[Any]] = {}

    # -- loading and eviction -----------------------------------------------------

    def preload(self, thread_id: str) -> None:
        """Load a thread's rows from the store now (from a worker thread: the read may wait)."""
        self._ensure_loaded(thread_id)

    def _ensure_loaded(self, thread_id: str) -> None:
        if thread_id in self._loaded:
            return
        self._loaded.add(thread_id)
        rows = self.store.load_thread(thread_id)
        for ns, checkpoint_id, parent_id, ctype, checkpoint, mtype, metadata in rows.checkpoints:
            self.storage[thread_id][ns][checkpoint_id] = ((ctype, checkpoint), (mtype, metadata), parent_id)
        for ns, channel, version, btype, blob in rows.blobs:
            self.blobs[(thread_id, ns, channel, version)] = (btype, blob)
            self._blob_keys.setdefault(thread_id, set()).add((thread_id, ns, channel, version))
        for ns, checkpoint_id, task_id, idx, channel, wtype, value, task_path in rows.writes:
            self.writes[(thread_id, ns, checkpoint_id)][(task_id, idx)] = (task_id, channel, (wtype, value), task_path)
            self._write_keys.setdefault(thread_id, set()).add((thread_id, ns, checkpoint_id))

    def evict(self, thread_id: str) -> None:
        """Forget a thread's in-memory copy; the store keeps it."""
        self._loaded.discard(thread_id)
        self.storage.pop(thread_id, None)
        for key in self._write_keys.pop(thread_id, ()):
            self.writes.pop(key, None)
        for key in self._blob_keys.pop(thread_id, ()):
            self.blobs.pop(key, None)

    def mark_new(self, thread_id: str) -> None:
        """A brand-new thread: nothing to load from the store."""
        self._loaded.add(thread_id)

    # -- reads ------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        self._ensure_loaded(config["configurable"]["thread_id"])
        return super().get_tuple(config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    def list(self, config: RunnableConfig | None, **kwargs: Any):
        if config is not None:
            self._ensure_loaded(config["configurable"]["thread_id"])
        return super().list(config, **kwargs)

    # -- writes -----------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"]["checkpoint_ns"]
        saved = super().put(config, checkpoint, metadata, new_versions)
        stored_checkpoint, stored_metadata, parent_id = self.storage[thread_id][ns][checkpoint["id"]]
        blob_keys = self._blob_keys.setdefault(thread_id, set())
        blob_keys.update((thread_id, ns, channel, version) for channel, version in new_versions.items())
        blobs = [
            (ns, channel, str(version), *self.blobs[(thread_id, ns, channel, version)])
            for channel, version in new_versions.items()
        ]
        self.store.queue_checkpoint(
            thread_id, (ns, checkpoint["id"], parent_id, *stored_checkpoint, *stored_metadata), blobs
        )
        return saved

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = config["configurable"]["checkpoint_id"]
        super().put_writes(config, writes, task_id, task_path)
        self._write_keys.setdefault(thread_id, set()).add((thread_id, ns, checkpoint_id))
        stored = self.writes.get((thread_id, ns, checkpoint_id), {})
        rows = []
        for idx, (channel, _) in enumerate(writes):
            key = (task_id, WRITES_IDX_MAP.get(channel, idx))
            if key in stored:
                _, _, (wtype, value), path = stored[key]
                rows.append((ns, checkpoint_id, task_id, key[1], channel, wtype, value, path))
        self.store.queue_writes(thread_id, rows)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        super().delete_thread(thread_id)
        self.store.queue_delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)
