import gin
import pytest

from chameleon_jax.registry import Registry


def test_unknown_name_suggests_closest():
  reg = Registry("things")
  reg.register("unet")(lambda width=1: width)
  with pytest.raises(KeyError, match=r"Unknown things 'unte'.*Did you mean 'unet'"):
    reg.get("unte")


def test_unknown_argument_is_refused_with_accepted_list():
  reg = Registry("things2")
  reg.register("f")(lambda a, b=2: a + b)
  with pytest.raises(TypeError, match=r"no argument\(s\) \['c'\].*accepted"):
    reg.build("f", a=1, c=3)


def test_gin_binding_sets_default_but_explicit_value_wins():
  reg = Registry("things3")

  @reg.register("g")
  def g(a, b=2):
    return a * 10 + b

  gin.clear_config()
  try:
    gin.parse_config("things3.g.b = 7")
    assert reg.build("g", a=1) == 17
    assert reg.build("g", a=1, b=3) == 13
  finally:
    gin.clear_config()


def test_double_registration_fails():
  reg = Registry("things4")
  reg.register("x")(lambda: 1)
  with pytest.raises(ValueError, match="registered twice"):
    reg.register("x")(lambda: 2)


def test_registry_without_gin_registers_after_gin_is_locked():
  """Config presets are imported with a config file, which can come after
  gin's config was finalised; a gin-configurable registry refuses then."""
  gin.clear_config()
  try:
    gin.parse_config("")
    gin.finalize()
    with pytest.raises(RuntimeError, match="locked"):
      Registry("things5").register("late")(lambda: 1)
    plain = Registry("things6", gin_configurable=False)
    plain.register("late")(lambda config: config + 1)
    assert plain.get("late")(1) == 2
  finally:
    gin.clear_config()
