"""The one override parser: typed values for training ConfigDicts (--config.KEY=VALUE) and frozen settings
dataclasses (--set KEY=VALUE)."""

import dataclasses
from typing import Optional

import ml_collections
import pytest

from cia_jax import config_lib


@pytest.mark.parametrize("typ, text, expected", [
    (bool, "yes", True), (bool, "Off", False), (int, " 7 ", 7), (float, "-inf", float("-inf")),
    (str, "'a b'", "a b"), (str, "/data/got10k", "/data/got10k"), (tuple, "(1, 2)", (1, 2)),
    (tuple, "[[1, 2]]", ((1, 2),)), (tuple, "3", (3,)), (tuple, "", ()), (Optional[float], "none", None),
    (Optional[float], "1.5", 1.5), (float | None, "null", None), (type(None), "(1, 2)", (1, 2)),
    (type(None), "abc", "abc")])
def test_values_parse_by_the_field_type(typ, text, expected):
  value = config_lib.parse_value("k", text, typ)
  assert value == expected and type(value) is type(expected)


def test_tuples_of_floats_stay_floats_and_errors_name_the_key():
  value = config_lib.parse_value("k", "[(1, -2)]", tuple, current=((0.5, 0.5),))
  assert value == ((1.0, -2.0),) and all(type(x) is float for x in value[0])
  with pytest.raises(ValueError, match=r"^k='x': expected a int"):
    config_lib.parse_value("k", "x", int)
  with pytest.raises(ValueError, match=r"^k='maybe': expected a bool"):
    config_lib.parse_value("k", "maybe", bool)
  with pytest.raises(ValueError, match=r"^k=None: the field holds a int and cannot be None"):
    config_lib.parse_value("k", "None", int)
  with pytest.raises(ValueError, match=r"^k=\"\('a',\)\": expected a tuple \(expected numbers"):
    config_lib.parse_value("k", "('a',)", tuple, current=(1.0,))
  with pytest.raises(ValueError, match="cannot set a field of type dict"):
    config_lib.parse_value("k", "{}", dict)


@dataclasses.dataclass(frozen=True)
class _Settings:
  size: int = 3
  scale: Optional[float] = None
  shifts: tuple = ((0.5, 0.5),)
  name: str = "a"


def test_config_dicts_and_dataclasses_share_the_parser():
  config = ml_collections.ConfigDict(dict(size=3, scale=config_lib.placeholder(float), shifts=((0.5, 0.5),),
                                          name="a"))
  items = ["size=4", "scale=2", "shifts=[[1, 2]]", "name='b'"]
  config_lib.apply_overrides(config, items)
  settings = config_lib.replace_fields(_Settings(), items, what="test setting")
  assert config.to_dict() == dataclasses.asdict(settings) == {"size": 4, "scale": 2.0, "shifts": ((1.0, 2.0),),
                                                              "name": "b"}
  assert config_lib.replace_fields(settings, ["scale=none"]).scale is None
  with pytest.raises(ValueError, match=r"unknown test setting 'sise' in 'sise=4'; valid: .*'size'"):
    config_lib.replace_fields(settings, ["sise=4"], what="test setting")
  with pytest.raises(ValueError, match=r"test setting size='big': expected a int"):
    config_lib.replace_fields(settings, ["size=big"], what="test setting")
  with pytest.raises(ValueError, match=r"test setting override 'size': expected KEY=VALUE \(key=value\)"):
    config_lib.replace_fields(settings, ["size"], what="test setting")
  with pytest.raises(ValueError, match=r"config override size='big': expected a int"):
    config_lib.apply_overrides(config, ["--config.size=big"])
