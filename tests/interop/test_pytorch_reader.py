"""Reading torch.save files without torch (cia_jax.interop.torch_pickle).

The fixtures in tests/data/interop/ were written by real torch 2.13 (`scripts/make_interop_fixtures.py`): the
same pytracking-like checkpoint in the zip format and in the legacy (pre-1.6) stream format, with the expected
tensors alongside in an .npz. Hostile pickles are built here and must be refused without running anything.
"""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from cia_jax.interop.torch_pickle import (PickledObject, UnsafeCheckpointError, load_torch_file, save_torch_file,
                                          state_dict_from_checkpoint)

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "interop"


@pytest.fixture(scope="module")
def expected():
  with np.load(DATA / "checkpoint_values.npz") as z:
    return {k[len("net/"):]: z[k] for k in z.files}


@pytest.mark.parametrize("name", ["checkpoint_zip.pth", "checkpoint_legacy.pth"])
def test_real_torch_files_match_stored_values(name, expected):
  obj = load_torch_file(DATA / name)
  assert obj["epoch"] == 3 and obj["net_type"] == "DiMPnet"
  net = obj["net"]
  assert isinstance(net, collections.OrderedDict) and list(net) == list(expected)  # order kept
  for key, want in expected.items():
    got = net[key]
    assert isinstance(got, np.ndarray), key
    assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, got.shape)
    np.testing.assert_array_equal(got, want, err_msg=key)
  # Spot checks of the tricky cases against values known independently of the .npz.
  np.testing.assert_array_equal(net["offset_slice"], np.arange(5, 11, dtype=np.float32).reshape(2, 3) * 0.5)
  np.testing.assert_array_equal(net["transposed"].T.shape, (4, 6))
  assert net["bfloat16"].dtype == np.float32 and net["int64"][1, 0] == 2**40
  assert net["scalar"].shape == () and net["empty"].shape == (0, 3)
  # Nested plain data and the training-code object (a stub holding its state).
  assert obj["stats"] == {"train": {"Loss/total": [0.5, 0.25]}, "shape": (1, 2)}
  ctor = obj["constructor"]
  assert isinstance(ctor, PickledObject) and ctor.pickled_class == "ltr.admin.model_constructor.NetConstructor"
  assert (ctor.fun_name, ctor.fun_module, ctor.kwds) == ("dimpnet18", "ltr.models.tracking.dimpnet",
                                                          {"optim_iter": 5})


def test_state_dict_from_checkpoint_variants():
  obj = load_torch_file(DATA / "checkpoint_zip.pth")
  net = state_dict_from_checkpoint({"net": {"a.weight": np.zeros(2, np.float32)}, "epoch": 1})
  assert list(net) == ["a.weight"]
  assert state_dict_from_checkpoint({"b": np.ones(1)}) == {"b": np.ones(1)}
  assert list(state_dict_from_checkpoint(obj)) == list(obj["net"])
  assert list(state_dict_from_checkpoint({"module.a": np.ones(1), "module.b.c": np.ones(1)})) == ["a", "b.c"]
  with pytest.raises(ValueError, match="my.pth: not a flat state dict"):
    state_dict_from_checkpoint({"net": {"a": {"nested": 1}}}, where="my.pth")
  with pytest.raises(ValueError, match="expected a state dict"):
    state_dict_from_checkpoint([1, 2], where="x")


def test_writer_round_trip(tmp_path):
  obj = {"net": collections.OrderedDict(
      w=np.arange(12, dtype=np.float32).reshape(3, 4).T, s=np.array(3, np.int64), e=np.zeros((0, 2), np.float16),
      b=np.array([True, False])), "epoch": 7}
  save_torch_file(tmp_path / "x.pth", obj)
  back = load_torch_file(tmp_path / "x.pth")
  assert back["epoch"] == 7
  for k, v in obj["net"].items():
    assert back["net"][k].dtype == v.dtype and back["net"][k].shape == v.shape
    np.testing.assert_array_equal(back["net"][k], v)


# ------------------------------------------------------------------------------------------------------------
# Hostile files.


class _Exploit:
  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return (self.func, (self.arg,))


def _legacy_framed(payload: bytes) -> bytes:
  header = b"".join(pickle.dumps(x, protocol=2) for x in
                    (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
  return header + payload


def _zip_framed(payload: bytes) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/version", "3\n")
  return buf.getvalue()


@pytest.mark.parametrize("frame", ["bare", "legacy", "zip"])
@pytest.mark.parametrize("func", [os.system, subprocess.call, eval])
def test_code_executing_pickles_are_refused(tmp_path, frame, func):
  marker = tmp_path / "pwned"
  arg = f"touch {marker}" if func is not eval else f"open({str(marker)!r}, 'w')"
  payload = pickle.dumps({"net": {"w": _Exploit(func, arg)}}, protocol=2)
  data = {"bare": payload, "legacy": _legacy_framed(payload), "zip": _zip_framed(payload)}[frame]
  path = tmp_path / "evil.pth"
  path.write_bytes(data)
  with pytest.raises(UnsafeCheckpointError) as err:
    load_torch_file(path)
  assert f"{func.__module__}.{func.__name__}" in str(err.value) and str(path) in str(err.value)
  assert not marker.exists()


def test_copyreg_reconstructor_only_for_stubs(tmp_path):
  # copyreg._reconstructor is allowed for training-code classes; aimed at anything else it is refused.
  payload = (b"\x80\x02ccopyreg\n_reconstructor\nq\x00cbuiltins\nobject\nq\x01h\x01N\x87q\x02Rq\x03.")
  path = tmp_path / "recon.pth"
  path.write_bytes(payload)
  with pytest.raises(UnsafeCheckpointError, match="builtins.object"):
    load_torch_file(path)


def test_bad_files_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    load_torch_file(tmp_path / "nope.pth")
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"this is not a checkpoint at all")
  with pytest.raises(ValueError, match="junk.pth"):
    load_torch_file(junk)
  # A legacy file cut short in the middle of its storages.
  full = (DATA / "checkpoint_legacy.pth").read_bytes()
  cut = tmp_path / "cut.pth"
  cut.write_bytes(full[:-40])
  with pytest.raises(ValueError, match="cut.pth: truncated legacy checkpoint"):
    load_torch_file(cut)
  # A zip without data.pkl.
  z = tmp_path / "other.zip"
  with zipfile.ZipFile(z, "w") as zf:
    zf.writestr("readme.txt", "hi")
  with pytest.raises(ValueError, match="other.zip: zip file without"):
    load_torch_file(z)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
  # Forge a zip checkpoint whose tensor claims 10 elements of a 4-element storage.
  save_torch_file(tmp_path / "ok.pth", {"w": np.zeros(4, np.float32)})
  with zipfile.ZipFile(tmp_path / "ok.pth") as zf:
    pkl = zf.read("archive/data.pkl")
    records = {n: zf.read(n) for n in zf.namelist()}
  shape_4 = b"K\x04\x85"  # protocol-2 opcodes of the tuple (4,): BININT1 4, TUPLE1
  assert pkl.count(shape_4) == 1
  records["archive/data.pkl"] = pkl.replace(shape_4, b"K\n\x85")
  bad = tmp_path / "bad.pth"
  with zipfile.ZipFile(bad, "w") as zf:
    for n, b in records.items():
      zf.writestr(n, b)
  with pytest.raises(ValueError, match="reaches element 9, but the storage has 4"):
    load_torch_file(bad)


def test_numpy_values_in_checkpoints(tmp_path):
  # pytracking 'stats' / 'settings' may hold NumPy scalars and arrays; they load as such.
  obj = {"stats": {"loss": np.float64(1.5), "hist": np.arange(4, dtype=np.int32).reshape(2, 2),
                   "names": np.array(["a", "bc"], dtype=object)}}
  path = tmp_path / "np.pth"
  path.write_bytes(pickle.dumps(obj, protocol=2))
  back = load_torch_file(path)["stats"]
  assert back["loss"] == 1.5 and isinstance(back["loss"], np.float64)
  np.testing.assert_array_equal(back["hist"], obj["stats"]["hist"])
  assert list(back["names"]) == ["a", "bc"]
