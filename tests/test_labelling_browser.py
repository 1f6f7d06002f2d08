"""The labelling page in headless Chromium (Debian's, through Selenium):
what is drawn with the mouse is what lands on disk, pixel for pixel."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from chameleon_jax.data.formats import geometry
from chameleon_jax.labelling import queue, server, store

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.action_builder import (  # noqa: E402
    ActionBuilder)
from selenium.webdriver.common.actions.mouse_button import (  # noqa: E402
    MouseButton)
from selenium.webdriver.common.actions.wheel_input import (  # noqa: E402
    ScrollOrigin)
from selenium.webdriver.common.keys import Keys  # noqa: E402

from tests import labelling_page as page  # noqa: E402

CLASSES = ("background", "crack", "spot")
COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75]]
H, W = 40, 48


def reference_stroke(points, radius, height, width):
  """Pixels whose centre is within `radius` of the polyline, pixel by pixel
  in float64 (the definition raster.py's docstring gives)."""
  out = np.zeros((height, width), bool)
  segments = ([(points[0], points[0])] if len(points) == 1 else
              list(zip(points[:-1], points[1:])))
  for i in range(height):
    for j in range(width):
      px, py = j + 0.5, i + 0.5
      for (ax, ay), (bx, by) in segments:
        dx, dy = bx - ax, by - ay
        t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, (
            (px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
        if math.hypot(px - ax - t * dx, py - ay - t * dy) <= radius:
          out[i, j] = True
          break
  return out


def _dataset(root, n=3):
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  rng = np.random.default_rng(0)
  for i in range(n):
    Image.fromarray(rng.integers(60, 200, (H, W), dtype=np.uint8)).save(
        root / "images" / f"img{i}.png")
  return store.LabelStore(store.layout_from_source(
      "image_mask_folders", {"root": str(root), "class_names": CLASSES}),
                          max_pixels=10**8)


def _serve(label_store, prelabels=None, threshold=0.5):
  app = server.LabelApp(label_store, COLOURS, prelabels=prelabels,
                        model_version="tiny@step20" if prelabels else None,
                        threshold=threshold, max_request_bytes=1 << 20)
  return server.LabelServer(app, "127.0.0.1", 0).start()


@contextlib.contextmanager
def _opened(tmp_path, chromium, n=3):
  """(store, driver) on a fresh dataset of `n` images, the page open."""
  label_store = _dataset(tmp_path / "raw", n)
  httpd = _serve(label_store)
  driver = chromium()
  try:
    page.open_page(driver, httpd.url)
    yield label_store, driver
  finally:
    httpd.stop()


def _saved(label_store, image_id):
  with Image.open(label_store.mask_file(image_id)) as mask:
    return np.asarray(mask)


def test_strokes_polygon_and_eraser_drawn_in_the_browser_are_the_saved_png(
    tmp_path, chromium):
  with _opened(tmp_path, chromium) as (label_store, driver):
    page.open_image(driver, "img1")
    pointer = page.Pointer(driver)
    # A horizontal brush stroke, class 1, radius 3 ("[" from 4).
    page.keys(driver, "b", "1", "[")
    stroke = pointer.drag([(6.5, 10.5), (20.5, 10.5), (30.5, 10.5)])
    # Two dabs of class 2, radius 2.
    page.keys(driver, "2", "[")
    dabs = [pointer.drag([(8.5, 30.5)]), pointer.drag([(40.2, 33.7)])]
    # A polygon of class 1: four clicks, Enter closes it.
    page.keys(driver, "g", "1")
    polygon = [pointer.click(x, y) for x, y in
               ((25, 18), (44, 20), (41, 36), (27, 31))]
    page.keys(driver, Keys.ENTER)
    # The eraser (radius 2) across the stroke and into the polygon.
    page.keys(driver, "e")
    erased = pointer.drag([(14.5, 4.5), (14.5, 24.5)])
    ops = driver.execute_script("return labeller.state.ops")
    assert [o["tool"] for o in ops] == ["brush", "brush", "brush", "polygon",
                                        "eraser"]
    expected = np.zeros((H, W), np.uint8)
    expected[reference_stroke(stroke, 3, H, W)] = 1
    for dab in dabs:
      expected[reference_stroke(dab, 2, H, W)] = 2
    # The labelme ingest path's rasteriser, for the polygon.
    expected[geometry.rasterise([("polygon", np.array(polygon), 1)], H, W)
             > 0] = 1
    expected[reference_stroke(erased, 2, H, W)] = 0
    # Every brush point the page recorded lies on the strokes sent (the
    # browser may add points between, on the same line).
    for op, sent in zip(ops, [stroke, *dabs]):
      assert all(abs(p[1] - sent[0][1]) < 1e-9 for p in op["points"])
    status = page.save(driver)
    assert "saved img1" in status, status
    np.testing.assert_array_equal(_saved(label_store, "img1"), expected)
    # The saved mask is what the page now shows.
    np.testing.assert_array_equal(page.shown_classes(driver), expected)
    (line,) = label_store.audit_lines()
    assert line["image"] == "img1" and line["operations"] == 5
    assert line["prelabel"] == "none" and line["seconds"] > 0
    assert line["class_pixels"] == np.bincount(
        expected.ravel(), minlength=3).tolist()


def _prelabels():
  def mask(rows, cols, value=1):
    m = np.zeros((H, W), np.uint8)
    m[rows, cols] = value
    return m
  return {  # threshold 0.5 -> priorities 0.96, 0.1, 0.7 (+ disagreement).
      "img0": queue.Prelabel(mask(slice(5, 12), slice(5, 20)), 0.52, 0.0,
                             True),
      "img1": queue.Prelabel(mask(slice(20, 30), slice(30, 40), 2), 0.95,
                             0.0, True),
      "img2": queue.Prelabel(np.zeros((H, W), np.uint8), 0.1, 0.5, False),
  }


def test_queue_accept_undo_defect_free_and_a_stale_tab(tmp_path, chromium):
  label_store = _dataset(tmp_path / "raw", n=4)
  done = np.zeros((H, W), np.uint8)
  done[1:3, 1:3] = 2
  Image.fromarray(done).save(label_store.mask_file("img3"))  # Labelled.
  prelabels = _prelabels()
  httpd = _serve(label_store, prelabels)
  driver = chromium()
  try:
    page.open_page(driver, httpd.url)
    # Unlabelled first, by how much a label would teach; labelled last.
    assert page.queue_order(driver) == ["img0", "img2", "img1", "img3"]
    assert driver.execute_script("return labeller.state.id") == "img0"
    assert driver.execute_script("return labeller.state.base") == "prelabel"
    driver.save_screenshot(str(tmp_path / "prelabel.png"))
    with Image.open(tmp_path / "prelabel.png") as shot:
      pixels = np.asarray(shot.convert("RGB")).astype(int)
    # The pre-label is drawn over the image in class 1's colour.
    reddish = (pixels[..., 0] - pixels[..., 1] > 40).sum()
    assert reddish > 7 * 15 * 4, reddish
    # Accept the pre-label: saved as it is; the page moves to img2.
    assert "pre-label accepted" in page.save(driver, "a")
    np.testing.assert_array_equal(_saved(label_store, "img0"),
                                  prelabels["img0"].mask)
    page.wait(driver, "labeller.state.id === 'img2'")
    # A defect-free confirmation, one key: an empty mask.
    page.save(driver, "0")
    assert not _saved(label_store, "img2").any()
    # img1: refine the pre-label with two strokes, undo the second, save.
    page.open_image(driver, "img1")
    pointer = page.Pointer(driver)
    page.keys(driver, "b", "1")
    first = pointer.drag([(5.5, 5.5), (15.5, 5.5)])
    pointer.drag([(5.5, 25.5), (15.5, 25.5)])
    page.chord(driver, Keys.CONTROL, "z")  # Undo the second stroke,
    page.chord(driver, Keys.CONTROL, "y")  # redo it,
    page.chord(driver, Keys.CONTROL, "z")  # undo it again.
    expected = prelabels["img1"].mask.copy()
    expected[reference_stroke(first, 4, H, W)] = 1
    np.testing.assert_array_equal(page.shown_classes(driver), expected)
    page.save(driver)
    np.testing.assert_array_equal(_saved(label_store, "img1"), expected)
    audit = {line["image"]: line for line in label_store.audit_lines()}
    assert audit["img0"]["prelabel"] == "accepted"
    assert audit["img0"]["model_version"] == "tiny@step20"
    assert audit["img2"]["prelabel"] == "rejected"
    assert audit["img1"]["prelabel"] == "edited"
    assert audit["img1"]["operations"] == 1
    # Two tabs on img3: the later save is refused, the first one kept.
    page.open_image(driver, "img3")
    first_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    page.open_page(driver, httpd.url)
    page.open_image(driver, "img3")
    page.keys(driver, "b", "1")
    page.Pointer(driver).drag([(20.5, 20.5)])
    assert "saved img3" in page.save(driver)
    kept = _saved(label_store, "img3").copy()
    driver.switch_to.window(first_tab)
    page.keys(driver, "b", "2")
    page.Pointer(driver).drag([(30.5, 30.5)])
    refused = page.save(driver)
    assert "409" in refused and "changed since this page loaded it" in refused
    np.testing.assert_array_equal(_saved(label_store, "img3"), kept)
    assert len(label_store.audit_lines()) == 4
  finally:
    httpd.stop()


def test_the_page_without_its_token_reads_nothing(tmp_path, chromium):
  """A script on the page's origin but without the session token (as a
  cross-site page would be) is refused by the API."""
  with _opened(tmp_path, chromium, n=1) as (label_store, driver):
    answer = driver.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/save', {method: 'POST', body: JSON.stringify({id: 'img0',"
        " base_revision: 'none', base: 'empty', operations: []})})"
        ".then(r => r.text().then(t => done([r.status, t])));")
    assert answer[0] == 403 and "X-Label-Token" in json.loads(answer[1])[
        "error"]
    assert not label_store.mask_file("img0").exists()


def test_zoom_and_pan_keep_dabs_on_their_pixels(tmp_path, chromium):
  """After a wheel zoom (a non-integer scale) and a right-button pan, a dab
  still lands on the image pixels under the pointer."""
  with _opened(tmp_path, chromium, n=1) as (label_store, driver):
    before = driver.execute_script(
        "const s = labeller.state; return [s.zoom, s.panX, s.panY]")
    pointer = page.Pointer(driver)
    cx, cy = pointer.client(20, 20)
    ActionChains(driver).scroll_from_origin(
        ScrollOrigin.from_viewport(cx, cy), 0, -120).perform()
    pan = ActionBuilder(driver)
    pan.pointer_action.move_to_location(cx, cy)
    pan.pointer_action.pointer_down(MouseButton.RIGHT)
    pan.pointer_action.move_to_location(cx - 37, cy - 23)
    pan.pointer_action.pointer_up(MouseButton.RIGHT)
    pan.perform()
    zoom, pan_x, pan_y = driver.execute_script(
        "const s = labeller.state; return [s.zoom, s.panX, s.panY]")
    assert zoom == pytest.approx(before[0] * 1.25)
    assert not float(zoom).is_integer()
    # The point under the wheel stayed put, then the view moved by the drag.
    assert pan_x == pytest.approx(cx - 37 - 20 * zoom - driver.execute_script(
        "return document.getElementById('view').getBoundingClientRect()"
        ".left"), abs=1e-6)
    page.keys(driver, "b", "2", "]")
    dabs = [pointer.drag([(x, y)]) for x, y in ((10.3, 12.6), (30.5, 8.5))]
    page.save(driver)
    expected = np.zeros((H, W), np.uint8)
    for dab in dabs:
      expected[reference_stroke(dab, 5, H, W)] = 2
    np.testing.assert_array_equal(_saved(label_store, "img0"), expected)
    assert pan_y != before[2]
