"""The family adapter interface, declared: what a model family's adapter must provide (docs/layout.md).

An adapter is a class in :data:`nodes.adapters.FAMILIES`; :func:`nodes.adapters.family_of` returns an instance
of it. Every adapter provides :class:`FamilyAdapter`; a family whose :class:`~.capabilities.Capabilities` turn
on ``text_key_switch`` also provides :class:`TextKeySwitchFamily`, one that turns on ``self_attention_patch``
also :class:`SelfAttentionPatchFamily` (:data:`CAPABILITY_INTERFACES`). The protocols are
``runtime_checkable``, so ``isinstance(adapter, FamilyAdapter)`` checks that every member is there (not its
signature); ``tests/test_adapter_interface.py`` checks each registered family.

A new family: write a class with these members (the static methods may be ``@staticmethod``), add it to
``FAMILIES`` in ``nodes/adapters/__init__.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

from .capabilities import Capabilities


@runtime_checkable
class FamilyAdapter(Protocol):
    """What every family adapter provides: a name, its capabilities and a test for its models.

    Attributes:
        family: the family's display name, used in messages (``"Wan 2.1/2.2 (WanModel)"``).
        capabilities: what the pack can do with the family's models.
        pooled_text_encoder: what produces the pooled text vector the family's model needs, named in the error
            when a conditioning lacks one (``nodes/host.py``'s ``check_conditioning``); None when the model
            needs none. (Callers read it with ``getattr(adapter, "pooled_text_encoder", None)``.)
    """

    family: str
    capabilities: Capabilities
    pooled_text_encoder: Optional[str]

    def matches(self, diffusion_model: Any) -> bool:
        """Whether a model is of this family.

        Args:
            diffusion_model: the MODEL's ``model.diffusion_model`` (may be None).

        Returns:
            True when this adapter handles the model; the registry tries the families in ``FAMILIES`` order.
        """
        ...


@runtime_checkable
class TextKeySwitchFamily(FamilyAdapter, Protocol):
    """What a family with ``capabilities.text_key_switch`` provides: ZSVD attention switching
    (``ZSVR_AttentionSwitch``).

    Attributes:
        switch_help: how the family's blocks are numbered and what the switch swaps, for the node's tooltip
            (``nodes/attention_switch.py``).
    """

    switch_help: str

    def num_blocks(self, model_patcher: Any) -> int:
        """How many blocks the switch can select.

        Args:
            model_patcher: the MODEL.

        Returns:
            The block count; block indices are ``0 .. num_blocks - 1``.
        """
        ...

    def install_switch(self, model_patcher: Any, blocks: list[int], is_active: Callable[..., bool]) -> None:
        """Patch the chosen blocks of a MODEL clone with the text key/value switch.

        Args:
            model_patcher: the MODEL clone to patch (the node already cloned it).
            blocks: the block indices to switch.
            is_active: the schedule gate, true for the steps the switch is on.

        Returns:
            None; the patches read the run's switch settings (``switch_protocol``) when they are called.
        """
        ...


@runtime_checkable
class SelfAttentionPatchFamily(FamilyAdapter, Protocol):
    """What a family with ``capabilities.self_attention_patch`` provides: the layer lookup and ``attn1`` hooks
    that SW-CFA (``nodes/swcfa.py``) and SLR temporal attention (``nodes/slr_temporal_attention.py``) use."""

    def attention_blocks(self, model_patcher: Any) -> dict[str, list[int]]:
        """The blocks that hold self-attention.

        Args:
            model_patcher: the MODEL.

        Returns:
            For each block group (``"input"``, ``"middle"``, ``"output"``), the ids of its blocks with
            self-attention.
        """
        ...

    def block_counts(self, model_patcher: Any) -> dict[str, int]:
        """How many blocks each group has.

        Args:
            model_patcher: the MODEL.

        Returns:
            The block count of each group, attention or not.
        """
        ...

    def self_attention_layers(self, model_patcher: Any) -> list[tuple[str, int, int, int]]:
        """Every self-attention layer, in the order the model runs them.

        Args:
            model_patcher: the MODEL.

        Returns:
            ``(group, block_id, block_index, level)`` per layer: the block group and id, the transformer block's
            index within it (the third item of an attn1 replace key) and how many times the feature map has been
            halved there (0 = the latent's own resolution).
        """
        ...

    def install_attn1_patch(self, model_patcher: Any, patch: Any) -> None:
        """Install an ``attn1`` patch (it edits the query, keys and values of every self-attention call).

        Args:
            model_patcher: the MODEL clone to patch.
            patch: the callable ComfyUI calls as an ``attn1_patch``.

        Returns:
            None.
        """
        ...

    def install_attn1_replace(self, model_patcher: Any, replace: Any, group: str, block_id: int,
                              block_index: int) -> None:
        """Replace one self-attention layer's attention call.

        Args:
            model_patcher: the MODEL clone to patch.
            replace: the callable ComfyUI calls instead of the layer's attention.
            group: the layer's block group (``"input"``, ``"middle"``, ``"output"``).
            block_id: the block's id in its group.
            block_index: the layer's index within the block.

        Returns:
            None.
        """
        ...


CAPABILITY_INTERFACES: dict[str, type] = {
    "text_key_switch": TextKeySwitchFamily,
    "self_attention_patch": SelfAttentionPatchFamily,
}
"""The protocol a family provides when the named :class:`Capabilities` field is true."""


def missing_members(adapter: Any) -> list[str]:
    """The members ``adapter`` lacks of the protocols its capabilities call for.

    Args:
        adapter: a family adapter class or instance.

    Returns:
        The missing members' names as ``"Protocol.member"``, sorted; empty when the adapter provides them all.
    """
    wanted = [FamilyAdapter] + [proto for field, proto in CAPABILITY_INTERFACES.items()
                                if getattr(getattr(adapter, "capabilities", None), field, False)]
    return sorted(f"{proto.__name__}.{name}" for proto in wanted for name in _members(proto)
                  if not hasattr(adapter, name))


def _members(proto: type) -> list[str]:
    """The attribute and method names a protocol declares itself (not those of the protocols it extends)."""
    names = set(vars(proto).get("__annotations__", {}))
    names.update(n for n, v in vars(proto).items() if callable(v) and not n.startswith("_"))
    return sorted(names)
