"""The family adapter interface is declared (issue 22, item 6): every registered family provides its protocols.

``nodes/adapters/interface.py`` declares what an adapter provides; these host tests check each family in
``FAMILIES`` (the adapter modules import ComfyUI, so they run on the real host).
"""

from __future__ import annotations

import importlib
import inspect

import pytest


@pytest.fixture
def adapters(host):
    """``(FAMILIES, interface module)`` from the booted host's copy of the pack."""
    registry = importlib.import_module(f"{host.pack.__name__}.nodes.adapters")
    interface = importlib.import_module(f"{host.pack.__name__}.nodes.adapters.interface")
    return registry.FAMILIES, interface


def _ids():
    return ["SDUNet", "Wan", "HunyuanVideo", "CogVideoX"]


@pytest.mark.parametrize("index", range(4), ids=_ids())
def test_every_family_provides_the_base_interface(adapters, index):
    families, interface = adapters
    assert len(families) == 4, "a family was added or removed: update _ids()"
    cls = families[index]
    for adapter in (cls, cls()):  # the registry holds classes; family_of returns an instance
        assert isinstance(adapter, interface.FamilyAdapter)
    assert isinstance(cls.family, str) and cls.family
    assert isinstance(cls.capabilities, interface.Capabilities)
    assert cls.pooled_text_encoder is None or (isinstance(cls.pooled_text_encoder, str) and cls.pooled_text_encoder)
    assert callable(cls.matches) and cls.matches(None) is False
    assert interface.missing_members(cls) == []


@pytest.mark.parametrize("index", range(4), ids=_ids())
def test_families_provide_the_interface_of_each_capability(adapters, index):
    families, interface = adapters
    cls = families[index]
    adapter = cls()
    for field, protocol in interface.CAPABILITY_INTERFACES.items():
        if getattr(cls.capabilities, field):
            assert isinstance(adapter, protocol), f"{cls.__name__} has {field} but not {protocol.__name__}"
            for name, member in vars(protocol).items():
                if inspect.isfunction(member) and not name.startswith("_"):
                    assert callable(getattr(adapter, name)), f"{cls.__name__}.{name}"
    if cls.capabilities.text_key_switch:
        assert isinstance(cls.switch_help, str) and cls.switch_help


def test_capability_interfaces_name_capabilities(adapters):
    _, interface = adapters
    assert set(interface.CAPABILITY_INTERFACES) <= set(interface.Capabilities.__dataclass_fields__)


def test_missing_members_names_what_a_new_family_lacks(adapters):
    _, interface = adapters

    class Half:
        family = "Half"
        capabilities = interface.Capabilities(text_key_switch=True, frame_axis="time", self_attention_patch=False,
                                              latent_is_video=True, context_windows=False)

        @staticmethod
        def matches(diffusion_model):
            return False

    assert not isinstance(Half(), interface.FamilyAdapter)
    assert interface.missing_members(Half) == [
        "FamilyAdapter.pooled_text_encoder", "TextKeySwitchFamily.install_switch", "TextKeySwitchFamily.num_blocks",
        "TextKeySwitchFamily.switch_help",
    ]
