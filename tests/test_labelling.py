"""The labelling tool without a browser: rasterisation, the store, the queue
and the HTTP API's refusals (nothing written on bad input)."""

from __future__ import annotations

import http.client
import json
import logging

import numpy as np
import pytest
from PIL import Image

from chameleon_jax.data import sources
from chameleon_jax.data.formats import labelme
from chameleon_jax.labelling import queue, raster, server, store

CLASSES = ("background", "crack", "spot")


def _dataset(root, n=3, size=(24, 32)):
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  rng = np.random.default_rng(1)
  for i in range(n):
    Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(
        root / "images" / f"p{i}.png")
  return root


def _store(root, **layout):
  return store.LabelStore(store.layout_from_source(
      "image_mask_folders", {"root": str(root), "class_names": CLASSES,
                             **layout}), max_pixels=10**8)


# --- Rasterisation ----------------------------------------------------------

def test_a_dab_of_radius_one_is_the_pixel_and_its_four_neighbours():
  ops = raster.validate([{"tool": "brush", "class": 2, "radius": 1,
                          "points": [[5.5, 3.5]]}], 8, 10, 3)
  mask = raster.paint(np.zeros((8, 10), np.uint8), ops)
  assert sorted(zip(*np.nonzero(mask))) == [(2, 5), (3, 4), (3, 5), (3, 6),
                                            (4, 5)]
  assert set(mask[mask > 0]) == {2}


def test_a_horizontal_stroke_is_a_capsule():
  """Radius 1.5 from (2.5, 4.5) to (7.5, 4.5): rows 3-5 between the end
  centres, plus the caps' pixels within 1.5 (distance sqrt(2) <= 1.5)."""
  ops = raster.validate([{"tool": "brush", "class": 1, "radius": 1.5,
                          "points": [[2.5, 4.5], [7.5, 4.5]]}], 10, 12, 3)
  mask = raster.paint(np.zeros((10, 12), np.uint8), ops)
  expected = np.zeros((10, 12), np.uint8)
  expected[3:6, 1:9] = 1  # Caps reach x = 1.0 and 9.0: pixel centres 1.5..8.5.
  np.testing.assert_array_equal(mask, expected)


def test_the_eraser_restores_background_and_later_operations_win():
  base = np.ones((6, 6), np.uint8)
  ops = raster.validate([
      {"tool": "box", "class": 2, "points": [[0, 0], [2, 2]]},
      {"tool": "eraser", "radius": 1, "points": [[4.5, 4.5]]}], 6, 6, 3)
  mask = raster.paint(base, ops)
  assert mask[4, 4] == mask[3, 4] == mask[4, 5] == 0 and mask[0, 5] == 1
  assert (mask[0:3, 0:3] == 2).all() and mask[3, 3] == 1


def test_a_polygon_here_is_the_labelme_polygon(tmp_path):
  """The same polygon through the page's path and through labelme ingest
  gives the same mask."""
  points = [[3.2, 2.7], [27.9, 5.1], [22.4, 20.6], [6.1, 17.3], [9.8, 9.9]]
  image = np.full((24, 32), 128, np.uint8)
  Image.fromarray(image).save(tmp_path / "part.png")
  (tmp_path / "part.json").write_text(json.dumps({
      "imagePath": "part.png", "imageHeight": 24, "imageWidth": 32,
      "shapes": [{"label": "spot", "shape_type": "polygon",
                  "points": points}]}))
  _, items = labelme.labelme(str(tmp_path), class_names=list(CLASSES))
  (item,) = list(items)
  assert not isinstance(item, sources.Rejected), item
  ops = raster.validate([{"tool": "polygon", "class": 2, "points": points}],
                        24, 32, 3)
  ours = raster.paint(np.zeros((24, 32), np.uint8), ops)
  assert ours.sum() > 100
  np.testing.assert_array_equal(ours, item.mask)


@pytest.mark.parametrize("op, message", [
    ({"tool": "lasso", "class": 1, "points": [[1, 1]]}, "tool 'lasso'"),
    ({"tool": "brush", "class": 3, "radius": 2, "points": [[1, 1]]},
     "class 3 is outside the palette 0..2"),
    ({"tool": "brush", "class": True, "radius": 2, "points": [[1, 1]]},
     "'class' must be an integer"),
    ({"tool": "brush", "class": 1, "radius": 0, "points": [[1, 1]]},
     "'radius' must be a number in (0, 256]"),
    ({"tool": "brush", "class": 1, "radius": 2, "points": [[1, 100]]},
     "outside the 32x24 image"),
    ({"tool": "polygon", "class": 1, "points": [[1, 1], [2, 2]]},
     "at least 3 points"),
    ({"tool": "box", "class": 1, "points": [[1, 1]]}, "2 opposite corners"),
    ({"tool": "brush", "class": 1, "radius": 2, "points": [["a", 1]]},
     "must be numbers"),
])
def test_bad_operations_name_the_operation_and_field(op, message):
  ok = {"tool": "eraser", "radius": 1, "points": [[1, 1]]}
  with pytest.raises(raster.LabelError) as e:
    raster.validate([ok, op], 24, 32, 3)
  assert str(e.value).startswith("operation 1") and message in str(e.value)


# --- The store ----------------------------------------------------------------

def test_a_saved_label_is_an_item_of_the_next_ingest(tmp_path):
  root = _dataset(tmp_path / "raw")
  st = _store(root)
  mask = np.zeros((24, 32), np.uint8)
  mask[4:9, 5:20] = 2
  revision = st.save("p1", mask, store.NO_MASK, {"seconds": 3.0})
  saved, saved_revision = st.read_mask("p1")
  assert saved_revision == revision
  np.testing.assert_array_equal(saved, mask)
  info, items = sources.image_mask_folders(str(root),
                                           class_names=list(CLASSES))
  found = {i.item_id: i for i in items if isinstance(i, sources.Item)}
  assert set(found) == {"p1"}  # The others are quarantined (no mask yet).
  np.testing.assert_array_equal(found["p1"].mask, mask)
  (line,) = st.audit_lines()
  assert line["revision"] == revision and line["base_revision"] == "none"
  assert line["mask"] == "masks/p1.png" and line["seconds"] == 3.0


def test_unlabelled_images_are_listed_not_counted_as_bad_inputs(tmp_path):
  """missing_masks='unlabelled': an ingest in the middle of labelling
  keeps the labelled images and lists the others; 'reject' (the default)
  still fails on them."""
  from chameleon_jax.data import dataset
  root = _dataset(tmp_path / "raw", n=10)
  st = _store(root)
  for i in range(7):
    st.save(f"p{i}", np.full((24, 32), i % 2, np.uint8), store.NO_MASK, {})
  options = dataset.IngestOptions({"train": 0.6, "val": 0.2, "test": 0.2})
  with pytest.raises(dataset.BadInputError, match="3 of 10 inputs"):
    dataset.build(*sources.image_mask_folders(str(root),
                                              class_names=list(CLASSES)),
                  tmp_path / "data", "parts", options, log=lambda *_: None)
  ds = dataset.build(*sources.image_mask_folders(
      str(root), class_names=list(CLASSES), missing_masks="unlabelled"),
                     tmp_path / "data", "parts", options, log=lambda *_: None)
  assert sorted(i["id"] for i in ds.manifest["items"]) == [
      f"p{i}" for i in range(7)]
  quarantine = ds.read_json("quarantine.json")
  assert sorted(q["path"].rsplit("/", 1)[1] for q in quarantine) == [
      "p7.png", "p8.png", "p9.png"]
  assert all(q["reason"].startswith("unlabelled: no mask yet") and
             q["counted"] is False for q in quarantine)
  # A real bad input among them still counts, and an image that does not
  # decode is bad, mask or not: 2 of 6 + 2 judged.
  (root / "masks" / "p0.png").write_bytes(b"not a png")
  (root / "images" / "p9.png").write_bytes(b"not a png either")
  with pytest.raises(dataset.BadInputError, match="2 of 8 inputs"):
    dataset.build(*sources.image_mask_folders(
        str(root), class_names=list(CLASSES), missing_masks="unlabelled"),
                  tmp_path / "data", "parts", options, log=lambda *_: None)
  with pytest.raises(ValueError, match="missing_masks='skip'"):
    sources.image_mask_folders(str(root), missing_masks="skip")


def test_masks_are_written_in_the_datasets_own_values(tmp_path):
  """A 0/255 binary dataset (value_map {255: 1}) gets 255 on disk."""
  root = _dataset(tmp_path / "raw")
  st = _store(root, class_names=("bg", "defect"), value_map={"255": 1})
  mask = np.zeros((24, 32), np.uint8)
  mask[2:5, 2:5] = 1
  st.save("p0", mask, store.NO_MASK, {})
  with Image.open(root / "masks" / "p0.png") as saved:
    assert set(np.unique(np.asarray(saved))) == {0, 255}
  np.testing.assert_array_equal(st.read_mask("p0")[0], mask)


def test_a_stale_revision_is_refused_and_nothing_overwritten(tmp_path):
  root = _dataset(tmp_path / "raw")
  st = _store(root)
  first = np.ones((24, 32), np.uint8)
  st.save("p0", first, store.NO_MASK, {})
  before = (root / "masks" / "p0.png").read_bytes()
  with pytest.raises(store.Conflict, match="changed since this page"):
    st.save("p0", first * 2, store.NO_MASK, {})
  assert (root / "masks" / "p0.png").read_bytes() == before
  assert len(st.audit_lines()) == 1


def test_a_traversal_is_refused_and_logged(tmp_path, caplog):
  root = _dataset(tmp_path / "raw")
  (tmp_path / "secret.png").write_bytes(b"x")
  st = _store(root)
  with caplog.at_level(logging.WARNING), pytest.raises(store.Refused) as e:
    st.image_file("../../secret")
  assert e.value.status == 403 and "leads outside" in str(e.value)
  assert "refused '../../secret'" in caplog.text
  with pytest.raises(store.Refused) as e:
    st.image_file("p9")
  assert e.value.status == 404


def test_a_mask_folder_linked_out_of_the_root_is_refused(tmp_path):
  root = _dataset(tmp_path / "raw")
  (root / "masks").rmdir()
  (tmp_path / "elsewhere").mkdir()
  (root / "masks").symlink_to(tmp_path / "elsewhere")
  with pytest.raises(store.Refused, match="leads outside"):
    _store(root).mask_file("p0")


def test_sources_the_tool_cannot_write_are_named():
  with pytest.raises(ValueError, match="data.source is 'labelme'"):
    store.layout_from_source("labelme", {"root": "/x"})
  with pytest.raises(ValueError, match="writes PNG masks"):
    store.layout_from_source("image_mask_folders",
                             {"root": "/x", "mask_ext": ".mat"})
  with pytest.raises(ValueError, match="not options of source"):
    store.layout_from_source("image_mask_folders", {"root": "/x",
                                                    "classes": {"a": 1}})
  with pytest.raises(ValueError, match="needs data.source_kwargs"):
    store.layout_from_source("image_mask_folders", {"root": None})
  with pytest.raises(ValueError, match="cannot store class 1"):
    store.layout_from_source("image_mask_folders", {
        "root": "/x", "value_map": {1: 2, 2: 2}, "class_names": ("a", "b",
                                                                 "c")})


# --- The queue ------------------------------------------------------------------

def test_the_queue_puts_the_most_instructive_unlabelled_images_first():
  def p(score, disagreement=0.0):
    return queue.Prelabel(np.zeros((2, 2), np.uint8), score, disagreement,
                          score > 0.5)
  prelabels = {"sure_defect": p(0.99), "borderline": p(0.31),
               "unstable": p(0.05, disagreement=0.9), "sure_ok": p(0.0),
               "done": p(0.3)}
  order = queue.order(["sure_ok", "done", "unstable", "borderline",
                       "sure_defect", "no_model"],
                      {"done": True}, prelabels, threshold=0.3)
  # logit(0.3) = -0.8473: unstable |-2.9444 + 0.8473| = 2.0971 ->
  # exp(-1.0486) + 0.9 = 1.2505; borderline |-0.8001 + 0.8473| -> 0.9767;
  # sure_defect |4.5951 + 0.8473| -> 0.0658; sure_ok (1e-6: -13.8155)
  # -> 0.0015; then no pre-label; labelled last.
  assert order == ["unstable", "borderline", "sure_defect", "sure_ok",
                   "no_model", "done"]
  assert queue.priority(prelabels["unstable"], 0.3) == pytest.approx(
      1.2505, abs=1e-4)
  assert queue.priority(prelabels["sure_ok"], 0.3) == pytest.approx(
      0.0015, abs=1e-4)
  # A saturated score is far from a threshold near 1 (log-odds), not close.
  assert queue.priority(p(0.999999), 0.99) < queue.priority(p(0.9), 0.99)
  assert queue.disagreement(np.array([[1, 1], [0, 0]]),
                            np.array([[1, 0], [0, 0]])) == 0.5
  assert queue.disagreement(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0


# --- The HTTP API -----------------------------------------------------------------

@pytest.fixture
def api(tmp_path):
  root = _dataset(tmp_path / "raw")
  app = server.LabelApp(_store(root), [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                        prelabels=None, model_version=None, threshold=0.5,
                        max_request_bytes=4096)
  httpd = server.LabelServer(app, "127.0.0.1", 0).start()
  port = httpd.server_address[1]

  def call(method, path, body=None, token=app.token, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, (bytes, type(None))) else \
        json.dumps(body).encode()
    connection.request(method, path, body=data, headers={
        "X-Label-Token": token, **(headers or {})})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    try:
      return response.status, json.loads(payload)
    except ValueError:
      return response.status, payload

  call.root, call.app, call.port = root, app, port
  yield call
  httpd.stop()


def _save(image_id="p0", **overrides):
  return {"id": image_id, "base_revision": "none", "base": "empty",
          "operations": [{"tool": "brush", "class": 1, "radius": 2,
                          "points": [[5, 5]]}], "seconds": 1.5, **overrides}


def test_the_page_carries_its_token_and_the_api_requires_it(api):
  status, page = api("GET", "/", token="")
  assert status == 200 and api.app.token.encode() in page
  assert api("GET", "/api/images", token="")[0] == 403
  assert api("GET", "/api/images", token="wrong")[0] == 403
  status, body = api("GET", "/api/images")
  assert status == 200 and [r["id"] for r in body["images"]] == ["p0", "p1",
                                                                 "p2"]
  status, png = api("GET", "/api/image?id=p1")
  assert status == 200 and png.startswith(b"\x89PNG")
  assert api("GET", "/static/raster.js", token="")[0] == 200
  for path in ("/static/../server.py", "/static/index.html", "/etc/passwd"):
    assert api("GET", path, token="")[0] == 404, path


def test_another_host_name_is_refused(api):
  """A DNS-rebinding page reaches 127.0.0.1 under its own host name."""
  status, body = api("GET", "/api/images", headers={"Host": "evil.example"})
  assert status == 403 and "is not this label server" in body["error"]
  status, _ = api("POST", "/api/save", _save(),
                  headers={"Origin": "http://evil.example"})
  assert status == 403


@pytest.mark.parametrize("body, status, message", [
    (_save("../../../etc/passwd"), 403, "leads outside the dataset root"),
    (_save("no_such_image"), 404, "no image 'no_such_image'"),
    (_save(operations=[{"tool": "brush", "class": 7, "radius": 2,
                        "points": [[5, 5]]}]), 400,
     "class 7 is outside the palette 0..2"),
    (_save(base="prelabel"), 400, "has no pre-label"),
    (_save(base="saved"), 400, "has no saved mask"),
    (_save(base_revision=None), 400, "base_revision"),
    (b"{not json", 400, "not JSON"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_bad_saves_are_refused_with_a_message_and_write_nothing(
    api, body, status, message):
  got, answer = api("POST", "/api/save", body)
  assert got == status and message in answer["error"], answer
  assert not any((api.root / "masks").iterdir())
  assert not (api.root / store.AUDIT_FILE).exists()


def test_an_oversized_upload_is_refused_from_its_length(api):
  big = _save(operations=[{"tool": "brush", "class": 1, "radius": 2,
                           "points": [[5, 5]] * 1000}])
  status, answer = api("POST", "/api/save", big)
  assert status == 413 and "over the limit of 4096 bytes" in answer["error"]
  assert not any((api.root / "masks").iterdir())
  assert api("POST", "/api/save", _save())[0] == 200  # The server lives on.


def test_an_image_that_does_not_decode_is_named_not_a_crash(api):
  (api.root / "images" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  for path in ("/api/image?id=p1", "/api/mask?id=p1"):
    status, answer = api("GET", path)
    assert status == 422 and "p1.png" in answer["error"], answer
  assert api("POST", "/api/save", _save("p1"))[0] == 422
  assert api("GET", "/api/image?id=p2")[0] == 200


def test_a_refused_post_leaves_a_kept_alive_connection_usable(api):
  """HTTP/1.1 keeps the connection: the refused request's body must be
  consumed, not read as the next request."""
  connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
  for token, expected in (("wrong", 403), (api.app.token, 200)):
    connection.request("POST", "/api/save", body=json.dumps(_save()).encode(),
                       headers={"X-Label-Token": token})
    response = connection.getresponse()
    response.read()
    assert response.status == expected
  big = json.dumps(_save(operations=[{"tool": "eraser", "radius": 1,
                                      "points": [[1, 1]] * 900}])).encode()
  connection.request("POST", "/api/save", body=big,
                     headers={"X-Label-Token": api.app.token})
  response = connection.getresponse()
  response.read()
  assert response.status == 413
  connection.request("GET", "/api/images",
                     headers={"X-Label-Token": api.app.token})
  assert connection.getresponse().status == 200
  connection.close()


def test_the_audit_says_how_the_pre_label_was_used(tmp_path):
  root = _dataset(tmp_path / "raw")
  prelabel = np.zeros((24, 32), np.uint8)
  prelabel[2:6, 2:6] = 1
  app = server.LabelApp(
      _store(root), [[0, 0, 0]] * 3,
      prelabels={"p0": queue.Prelabel(prelabel, 0.9, 0.0, True)},
      model_version="m@1", threshold=0.5, max_request_bytes=1 << 20)
  dab = [{"tool": "brush", "class": 2, "radius": 1, "points": [[20.5, 10.5]]}]
  first = app.save({"id": "p0", "base_revision": "none", "base": "empty",
                    "operations": [], "seconds": float("nan")})
  second = app.save({"id": "p0", "base_revision": first["revision"],
                     "base": "saved", "operations": dab, "seconds": 1e9})
  third = app.save({"id": "p0", "base_revision": second["revision"],
                    "base": "prelabel", "operations": dab, "seconds": 2})
  app.save({"id": "p1", "base_revision": "none", "base": "empty",
            "operations": dab})
  assert [first["prelabel"], second["prelabel"], third["prelabel"]] == [
      "rejected", "not used", "edited"]
  lines = (root / store.AUDIT_FILE).read_text().splitlines()
  audit = [json.loads(line, parse_constant=lambda c: pytest.fail(c))
           for line in lines]  # Strict JSON: no NaN or Infinity.
  assert [a["seconds"] for a in audit] == [None, 86400.0, 2.0, None]
  assert [a["model_version"] for a in audit] == ["m@1"] * 3 + [None]
  assert audit[3]["prelabel"] == "none"
  saved = app.store.read_mask("p0")[0]
  assert saved[10, 20] == 2 and (saved[2:6, 2:6] == 1).all()


def test_label_mode_names_a_busy_port_and_ignores_an_empty_checkpoint_dir(
    tmp_path):
  import socket
  from chameleon_jax.components import label as label_mode
  from tests import tiny_config
  root = _dataset(tmp_path / "raw")
  config = tiny_config.get_config("folders")
  config.data.source_kwargs.root = str(root)
  config.data.source_kwargs.class_names = CLASSES
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)  # Nothing trained yet.
  assert label_mode.app(config, str(workdir)).model_version is None
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    config.label.port = busy.getsockname()[1]
    with pytest.raises(ValueError, match=f"cannot serve on 127.0.0.1:"
                       f"{config.label.port}.*choose another"):
      label_mode.label(config, str(workdir), log=lambda *_: None)
  config.label.prelabel = "on"
  with pytest.raises(ValueError, match="has no trained model"):
    label_mode.app(config, str(workdir))
  config.label.prelabel = "sometimes"
  with pytest.raises(ValueError, match="expected one of"):
    label_mode.app(config, str(workdir))


def test_images_are_shown_stretched_and_class_colours_cycle():
  from chameleon_jax.data import overlays
  # A 12-bit ramp in a 16-bit file: 0.5th/99.5th percentiles of 0..4095
  # are 20.475 and 4074.525, so 20 -> 0, 4075 -> 255, 2047.5 -> 127.5.
  ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64, 1)
  shown = overlays.stretched_uint8(ramp)
  assert shown.dtype == np.uint8 and shown.shape == (64, 64, 1)
  flat = shown.ravel()
  assert flat[20] == 0 and flat[4075] == 255 and flat[2047] in (127, 128)
  two = np.stack([np.full((4, 4), 7, np.uint8), np.zeros((4, 4), np.uint8)],
                 -1)
  assert (overlays.stretched_uint8(two) == 7).all()  # First channel.
  colours = overlays.class_colours(np.arange(20))
  np.testing.assert_array_equal(colours[:9], overlays.PALETTE)
  np.testing.assert_array_equal(colours[9], overlays.PALETTE[1])
  np.testing.assert_array_equal(colours[17], overlays.PALETTE[1])
