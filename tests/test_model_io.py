"""The model_io room: restoring for inference, the best/latest choice, the
model card, the parameter digest; and the atomic writes every room uses."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from chameleon_jax import atomic
from chameleon_jax.model_io import card as card_lib
from chameleon_jax.model_io import checkpoint as ckpt_lib
from chameleon_jax.model_io import restore as restore_lib
from chameleon_jax.model_io import state as state_lib
from chameleon_jax.train import optim
from tests.conftest import REPO

SIG = card_lib.signature("unet", 2, 1, "float32",
                         {"widths": [4, 8], "norm_groups": 2})


def _trained(tmp_path, best_metric):
  """A workdir with a model card and one latest (step 3) and, with a best
  metric, one best (step 2) checkpoint whose parameters differ."""
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10,
                               warmup_steps=1, weight_decay=0.0,
                               grad_clip_norm=None)
  _, state = state_lib.create(card_lib.build(SIG), tx, use_ema=False)
  card_lib.write_card(tmp_path, SIG, ["background", "defect"], "data", "h")
  ckpt = ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1,
                               best_metric=best_metric)
  shifted = state.replace(params=jax_tree_add(state.params, 1.0))
  if best_metric:
    ckpt.save_best(2, shifted, SIG, {best_metric: 0.5})
  ckpt.save(3, state, {"position": 3}, SIG, force=True)
  ckpt.wait()
  ckpt.close()
  return tx, state, shifted


def jax_tree_add(tree, value):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.map(lambda x: x + value, tree)


@pytest.mark.parametrize("best_metric,restored_as", [
    ("dice", ("best", 2)), ("", ("latest", 3))])
def test_best_is_restored_and_labelled_as_what_it_is(tmp_path, best_metric,
                                                     restored_as):
  """"best" restores the best checkpoint; where no best metric was kept
  (train.best_metric=""), the latest, labelled "latest" (it was labelled
  "best")."""
  tx, state, shifted = _trained(tmp_path, best_metric)
  restored = restore_lib.restore(tmp_path, "best", tx=tx, use_ema=False,
                                 best_metric=best_metric)
  assert (restored.card["checkpoint"], restored.card["step"]) == restored_as
  want = shifted if best_metric else state
  assert card_lib.params_digest(restored.state.params) == \
      card_lib.params_digest(want.params)


def test_best_without_a_best_metric_is_refused_by_the_checkpointer(tmp_path):
  _, state, _ = _trained(tmp_path, "")
  ckpt = ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1,
                               best_metric=None)
  with pytest.raises(ValueError, match="No best checkpoints are kept"):
    ckpt.restore(ckpt_lib.abstract(state), SIG, best=True)
  ckpt.close()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
  tx, _, _ = _trained(tmp_path, "")
  other = {**SIG, "kwargs": {"widths": [8, 16], "norm_groups": 2}}
  with pytest.raises(ckpt_lib.ModelMismatchError, match="kwargs"):
    restore_lib.restore(tmp_path, "latest", tx=tx, use_ema=False,
                        best_metric=None, expected=lambda sig: other)
  with pytest.raises(ValueError, match="expected one of"):
    restore_lib.restore(tmp_path, "newest", tx=tx, use_ema=False,
                        best_metric=None)


def test_missing_card_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="model.json is missing"):
    card_lib.read_card(tmp_path)


def test_params_digest_sees_values_shapes_and_names():
  a = {"w": jnp.zeros((2, 3)), "b": jnp.ones((3,))}
  digests = {card_lib.params_digest(t) for t in (
      a, {**a, "w": a["w"].at[0, 0].set(1e-7)}, {**a, "w": jnp.zeros((3, 2))},
      {"v": a["w"], "b": a["b"]})}
  assert len(digests) == 4
  assert card_lib.params_digest(a) == card_lib.params_digest(
      {"b": np.ones(3, np.float32), "w": np.zeros((2, 3), np.float32)})


def test_restoring_imports_neither_the_loop_nor_grain(tmp_path):
  _trained(tmp_path, "")
  code = (
      "import sys\n"
      "from chameleon_jax.model_io import restore\n"
      "from chameleon_jax.train import optim\n"
      "tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10, "
      "warmup_steps=1, weight_decay=0.0, grad_clip_norm=None)\n"
      f"r = restore.restore({str(tmp_path)!r}, 'latest', tx=tx, "
      "use_ema=False, best_metric=None)\n"
      "bad = [m for m in sys.modules if m.startswith(('grain', "
      "'chameleon_jax.train.loop', 'chameleon_jax.data.pipeline', "
      "'tensorboardX'))]\n"
      "assert not bad, bad\n"
      "print('CLEAN', r.card['step'])\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "CLEAN 3" in out.stdout


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
  path = tmp_path / "sub" / "plan.json"
  atomic.write_json(path, {"steps": 1})
  assert json.loads(path.read_text()) == {"steps": 1}
  with pytest.raises(RuntimeError):
    with atomic.replacing(path) as tmp:
      tmp.write_text("half")
      raise RuntimeError("disk full")
  assert json.loads(path.read_text()) == {"steps": 1}
  assert [p.name for p in path.parent.iterdir()] == ["plan.json"]
  atomic.write_json(path, {"b": 1, "a": 2}, sort_keys=True)
  assert path.read_text() == '{\n "a": 2,\n "b": 1\n}\n'


def test_options_spelled_at_their_defaults_are_the_same_model(tmp_path):
  """A workdir trained when the template spelled the UNet's defaults out
  ({"widths": [16, 32, 64, 128], "norm": "group"}) restores under a
  config that leaves them unset; another width is still refused."""
  spelled = card_lib.signature("unet", 2, 1, "float32",
                               {"widths": [16, 32, 64, 128], "norm": "group"})
  unset = card_lib.signature("unet", 2, 1, "float32", {})
  ckpt_lib.check_signature(spelled, unset, tmp_path)
  assert card_lib.same_model(spelled, unset)
  wider = card_lib.signature("unet", 2, 1, "float32", {"widths": [8, 16]})
  with pytest.raises(ckpt_lib.ModelMismatchError, match="widths"):
    ckpt_lib.check_signature(spelled, wider, tmp_path)
  assert not card_lib.same_model(spelled, {**unset, "num_classes": 3})
