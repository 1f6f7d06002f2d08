"""Driving the labelling page in a real browser (Selenium): open it, drag and
click at image coordinates, press keys, wait for saves. Shared by the
browser tests and the end-to-end labelling loop.

Pointer positions are whole viewport pixels; `at` returns the image
coordinates the page itself computes for the pixel it was sent to, so an
expected raster is built from exactly what the page recorded.
"""

from __future__ import annotations

import time

import numpy as np
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By


def wait(driver, script: str, timeout: float = 30.0):
  """Polls `return <script>` until truthy; returns its value."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = driver.execute_script(f"return {script}")
    if value:
      return value
    time.sleep(0.05)
  raise TimeoutError(f"page: {script!r} not true after {timeout} s; status: "
                     f"{status(driver)!r}")


def status(driver) -> str:
  return driver.find_element(By.ID, "status").text


def open_page(driver, url: str) -> None:
  driver.get(url)
  wait(driver, "window.labeller && window.labeller.ready")


def open_image(driver, image_id: str) -> None:
  driver.execute_script("return labeller.openImage(arguments[0], true)",
                        image_id)
  wait(driver, f"labeller.state.id === {image_id!r} && !labeller.state.busy")


class Pointer:
  """Image coordinates <-> the viewport pixels the browser is sent to."""

  def __init__(self, driver):
    self.driver = driver

  def client(self, x: float, y: float) -> tuple[int, int]:
    cx, cy = self.driver.execute_script(
        "return labeller.toClient(arguments[0], arguments[1])", x, y)
    return round(cx), round(cy)

  def at(self, x: float, y: float) -> tuple[tuple[int, int], list[float]]:
    """(viewport pixel nearest to image point (x, y), the image point the
    page computes for that pixel)."""
    cx, cy = self.client(x, y)
    image = self.driver.execute_script(
        "const r = document.getElementById('view').getBoundingClientRect();"
        "const s = labeller.state;"
        "return [(arguments[0] - r.left - s.panX) / s.zoom,"
        "        (arguments[1] - r.top - s.panY) / s.zoom];", cx, cy)
    return (cx, cy), image

  def drag(self, points: list[tuple[float, float]]) -> list[list[float]]:
    """Presses at the first point, moves through the rest, releases; returns
    the image points the page recorded at the pressed and moved-to pixels."""
    actions = ActionBuilder(self.driver)
    recorded = []
    for i, (x, y) in enumerate(points):
      (cx, cy), image = self.at(x, y)
      recorded.append(image)
      actions.pointer_action.move_to_location(cx, cy)
      if i == 0:
        actions.pointer_action.pointer_down()
    actions.pointer_action.pointer_up()
    actions.perform()
    return recorded

  def click(self, x: float, y: float) -> list[float]:
    (cx, cy), image = self.at(x, y)
    actions = ActionBuilder(self.driver)
    actions.pointer_action.move_to_location(cx, cy)
    actions.pointer_action.click()
    actions.perform()
    return image


def keys(driver, *sequence: str) -> None:
  ActionChains(driver).send_keys(*sequence).perform()


def chord(driver, modifier: str, key: str) -> None:
  """`key` with `modifier` held (e.g. Keys.CONTROL, "z")."""
  ActionChains(driver).key_down(modifier).send_keys(key).key_up(
      modifier).perform()


def save(driver, key: str = "s") -> str:
  """Presses `key` (a saving key) and waits for the page's verdict."""
  before = driver.execute_script("return labeller.saves || 0")
  keys(driver, key)
  wait(driver, f"(labeller.saves || 0) > {before} && !labeller.state.busy")
  return status(driver)


def queue_order(driver) -> list[str]:
  return [li.get_attribute("data-id")
          for li in driver.find_elements(By.CSS_SELECTOR, "#queue li")]


def shown_classes(driver) -> np.ndarray:
  """The class map the page shows (before saving), (H, W) uint8."""
  flat, height, width = driver.execute_script(
      "return [Array.from(labeller.classes), labeller.state.height,"
      " labeller.state.width]")
  return np.asarray(flat, np.uint8).reshape(height, width)
