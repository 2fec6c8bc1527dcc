"""The public node contract, pinned: every ``ZSVR_*`` node's inputs and outputs as ComfyUI sees them.

Saved workflows refer to a node by its id, to its inputs by name (API format)
or by widget position (UI format), and to its outputs by index. So for every
``ZSVR_*`` node in the live registry this test reads ``INPUT_TYPES()``,
``RETURN_TYPES`` and ``RETURN_NAMES`` and compares them with the committed
snapshot ``tests/node_contract.json``:

* an input: name, position, section (required/optional/...), type, default,
  the options of a fixed combo, and ``control_after_generate`` (it adds a
  widget value to UI-format workflows);
* an output: position, type and name.

A released entry that is removed, renamed, moved, re-typed or given another
default (or a combo option that is dropped) fails ``test_released_contract_is_unchanged``
with a message naming it. Something new (a node, an input or output appended
at the end, a combo option appended) is compatible, but it fails
``test_no_unrecorded_additions`` until the snapshot is updated on purpose::

    COMFYUI_PATH=../ComfyUI python tests/test_node_contract.py --update

so the snapshot file only ever changes in a deliberate commit.
"""

from __future__ import annotations

import json
import pathlib
import sys

SNAPSHOT = pathlib.Path(__file__).resolve().parent / "node_contract.json"
UPDATE_COMMAND = "COMFYUI_PATH=../ComfyUI python tests/test_node_contract.py --update"

# Combos whose options are the files found on disk (they differ per install): only their type is pinned.
DYNAMIC_OPTIONS = {("ZSVR_LoadVideo", "video"), ("ZSVR_LoadCogVideoX", "model_folder")}


def live_contract(host) -> dict:
    """{node id: {"inputs": [...], "outputs": [...]}} read from the host's registry."""
    contract = {}
    for node_id in host.zsvr_node_ids():
        cls = host.nodes.NODE_CLASS_MAPPINGS[node_id]
        inputs = []
        for section, entries in cls.INPUT_TYPES().items():
            for name, spec in entries.items():
                kind = spec[0]
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                entry = {"name": name, "section": section}
                if isinstance(kind, (list, tuple)):  # V1-style combo: the options are the type
                    entry["type"], combo = "COMBO", list(kind)
                else:
                    entry["type"], combo = str(kind), options.get("options")
                if entry["type"] == "COMBO":
                    entry["options"] = None if (node_id, name) in DYNAMIC_OPTIONS else list(combo or [])
                if "default" in options:
                    entry["default"] = options["default"]
                if options.get("control_after_generate"):
                    entry["control_after_generate"] = True
                inputs.append(entry)
        names = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
        outputs = [{"type": str(t), "name": str(n)} for t, n in zip(cls.RETURN_TYPES, names)]
        contract[node_id] = {"inputs": inputs, "outputs": outputs}
    return contract


def _fmt(value) -> str:
    return "<none>" if value is _MISSING else json.dumps(value)


_MISSING = object()


def compare(released: dict, live: dict) -> tuple[list[str], list[str]]:
    """(breaking changes, compatible additions) of ``live`` against the ``released`` snapshot."""
    breaking: list[str] = []
    added: list[str] = []
    for node_id in sorted(live.keys() - released.keys()):
        added.append(f"new node {node_id}")
    for node_id, old in released.items():
        new = live.get(node_id)
        if new is None:
            breaking.append(f"node {node_id} was removed (or renamed)")
            continue
        for what in ("inputs", "outputs"):
            old_list, new_list = old[what], new[what]
            new_names = [e["name"] for e in new_list]
            for pos, before in enumerate(old_list):
                label = f"{node_id} {what[:-1]} {pos} '{before['name']}'"
                if pos >= len(new_list) or new_list[pos]["name"] != before["name"]:
                    if before["name"] in new_names:
                        breaking.append(f"{label} moved to position {new_names.index(before['name'])}")
                    elif pos < len(new_list):
                        breaking.append(f"{label} was removed or renamed (position {pos} is now '{new_list[pos]['name']}')")
                    else:
                        breaking.append(f"{label} was removed")
                    continue
                after = new_list[pos]
                for key in ("type", "section", "default", "control_after_generate"):
                    a, b = before.get(key, _MISSING), after.get(key, _MISSING)
                    if a != b or type(a) is not type(b):
                        name = "changed default" if key == "default" else f"changed {key}"
                        breaking.append(f"{label}: {name} from {_fmt(a)} to {_fmt(b)}")
                a_opts, b_opts = before.get("options"), after.get("options")
                if a_opts is not None and b_opts is not None:
                    if b_opts[:len(a_opts)] != a_opts:
                        gone = [o for o in a_opts if o not in b_opts]
                        why = f"lost {gone}" if gone else "reordered"
                        breaking.append(f"{label}: combo options {why} (was {a_opts}, now {b_opts})")
                    elif len(b_opts) > len(a_opts):
                        added.append(f"{label}: combo options appended {b_opts[len(a_opts):]}")
            for pos in range(len(old_list), len(new_list)):
                added.append(f"{node_id} {what[:-1]} {pos} '{new_list[pos]['name']}' appended")
    return breaking, added


def load_snapshot() -> dict:
    return json.loads(SNAPSHOT.read_text())


def test_live_contract_is_well_formed(host):
    """The reader itself: every node has outputs and unique input names, and each combo exempted from
    option pinning (DYNAMIC_OPTIONS) still exists as a combo."""
    live = live_contract(host)
    assert live, "no ZSVR_* node in the registry"
    for node_id, entry in live.items():
        assert entry["outputs"], f"{node_id} has no outputs"
        assert len({e["name"] for e in entry["inputs"]}) == len(entry["inputs"]), f"{node_id}: duplicate input name"
    for node_id, name in sorted(DYNAMIC_OPTIONS):
        kinds = [e["type"] for e in live.get(node_id, {}).get("inputs", []) if e["name"] == name]
        assert kinds == ["COMBO"], f"DYNAMIC_OPTIONS names {node_id}.{name}, which is not a combo input"


def test_released_contract_is_unchanged(host):
    breaking, _ = compare(load_snapshot(), live_contract(host))
    assert not breaking, (
        "the released node contract changed (saved workflows would break):\n  " + "\n  ".join(breaking)
    )


def test_no_unrecorded_additions(host):
    _, added = compare(load_snapshot(), live_contract(host))
    assert not added, (
        "compatible additions to the node contract are not in tests/node_contract.json:\n  "
        + "\n  ".join(added)
        + f"\nIf they are intended, update the snapshot on purpose: {UPDATE_COMMAND}"
    )


def test_only_the_runners_chunk_node_is_hidden_from_the_page(host):
    """The page lists a node unless its info says ``deprecated`` (ComfyUI's one flag that keeps a node out of the
    search and the library): the runner's own chunk node carries it, every node a user places does not (issue 25
    item 7). Read as the server reads it for ``/object_info``."""
    pack_ids = [k for k in host.nodes.NODE_CLASS_MAPPINGS if k.startswith(("ZSVR_", "ZSVRHeadless_"))]
    hidden = set()
    for node_id in pack_ids:
        cls = host.nodes.NODE_CLASS_MAPPINGS[node_id]
        info = cls.GET_NODE_INFO_V1() if hasattr(cls, "GET_NODE_INFO_V1") else {}
        if info.get("deprecated") or getattr(cls, "DEPRECATED", False):
            hidden.add(node_id)
    assert "ZSVRHeadless_ChunkOutput" in pack_ids
    assert hidden == {"ZSVRHeadless_ChunkOutput"}, hidden


def test_compare_names_each_kind_of_change():
    """The comparison itself: each kind of change is reported, and in the right category."""
    released = {"ZSVR_A": {
        "inputs": [
            {"name": "model", "section": "required", "type": "MODEL"},
            {"name": "rule", "section": "required", "type": "COMBO", "options": ["a", "b"], "default": "a"},
            {"name": "steps", "section": "required", "type": "INT", "default": 10},
        ],
        "outputs": [{"type": "MODEL", "name": "model"}],
    }}
    assert compare(released, json.loads(json.dumps(released))) == ([], [])

    def changed(edit):
        live = json.loads(json.dumps(released))
        edit(live)
        return compare(released, live)

    breaking, added = changed(lambda c: c["ZSVR_A"]["inputs"][2].update(default=20))
    assert breaking == ["ZSVR_A input 2 'steps': changed default from 10 to 20"] and not added
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"][2].update(default=10.0))
    assert breaking and "changed default" in breaking[0]
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"][2].update(type="FLOAT"))
    assert breaking == ["ZSVR_A input 2 'steps': changed type from \"INT\" to \"FLOAT\""]
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"][2].update(section="optional"))
    assert breaking == ["ZSVR_A input 2 'steps': changed section from \"required\" to \"optional\""]
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"][2].update(name="num_steps"))
    assert breaking == ["ZSVR_A input 2 'steps' was removed or renamed (position 2 is now 'num_steps')"]
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"].pop(1))
    assert breaking[0] == "ZSVR_A input 1 'rule' was removed or renamed (position 1 is now 'steps')"
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"].reverse())
    assert "ZSVR_A input 0 'model' moved to position 2" in breaking
    breaking, _ = changed(lambda c: c["ZSVR_A"]["inputs"][1].update(options=["b", "c"]))
    assert breaking and "lost ['a']" in breaking[0]
    breaking, added = changed(lambda c: c["ZSVR_A"]["inputs"][1].update(options=["a", "b", "c"]))
    assert not breaking and added == ["ZSVR_A input 1 'rule': combo options appended ['c']"]
    breaking, _ = changed(lambda c: c["ZSVR_A"]["outputs"][0].update(name="patched"))
    assert breaking == ["ZSVR_A output 0 'model' was removed or renamed (position 0 is now 'patched')"]
    breaking, _ = changed(lambda c: c["ZSVR_A"]["outputs"][0].update(type="LATENT"))
    assert breaking == ["ZSVR_A output 0 'model': changed type from \"MODEL\" to \"LATENT\""]
    breaking, added = changed(lambda c: c["ZSVR_A"]["inputs"].append({"name": "x", "section": "optional", "type": "IMAGE"}))
    assert not breaking and added == ["ZSVR_A input 3 'x' appended"]
    breaking, added = changed(lambda c: c["ZSVR_A"]["outputs"].append({"type": "LATENT", "name": "latent"}))
    assert not breaking and added == ["ZSVR_A output 1 'latent' appended"]
    breaking, added = changed(lambda c: c.update(ZSVR_B={"inputs": [], "outputs": []}))
    assert not breaking and added == ["new node ZSVR_B"]
    breaking, added = changed(lambda c: c.pop("ZSVR_A"))
    assert breaking == ["node ZSVR_A was removed (or renamed)"] and not added


def main(argv: list[str]) -> int:
    import tempfile

    import runpy

    runpy.run_path(str(pathlib.Path(__file__).resolve().parent.parent / "pack_import.py"))["import_pack"]()
    import host_harness  # this script's folder is on sys.path

    comfy_dir, reason = host_harness.find_comfyui()
    if comfy_dir is None:
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        host = host_harness.Host(comfy_dir, pathlib.Path(work))
        live = live_contract(host)
    if "--update" in argv:
        SNAPSHOT.write_text(json.dumps(live, indent=1) + "\n")
        print(f"wrote {SNAPSHOT} ({len(live)} nodes); commit it on purpose")
        return 0
    breaking, added = compare(load_snapshot(), live)
    for line in breaking:
        print("BREAKING:", line)
    for line in added:
        print("ADDED:", line)
    return 1 if breaking or added else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
