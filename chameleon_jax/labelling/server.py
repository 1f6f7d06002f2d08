"""The labelling tool's web server: one page and a small JSON API.

Python's standard `http.server` (threaded), on 127.0.0.1 unless asked
otherwise: a local tool for a few people needs no framework, and the
standard library's server has nothing to pin. What keeps it safe:

- every /api/ request carries the session's token (`X-Label-Token`, made
  at start and written into the page): another site open in the same
  browser cannot read or save labels (cross-site requests cannot set the
  header, and without CORS they cannot read the answer);
- the Host header must name this server (a DNS-rebinding page gets 403);
- bodies over `max_request_bytes` are refused from their Content-Length
  (413): never parsed nor held in memory;
- image ids are resolved under the dataset root (`LabelStore`); a path
  leading out of it is refused (403) and logged;
- a save names the mask revision it was drawn on; a later save of the same
  image from another tab gets 409 and writes nothing.

API (JSON unless said):
  GET  /                     the page
  GET  /static/label.js|raster.js|label.css  its scripts and style sheet
  GET  /api/images           the queue: id, labelled, revision, score,
                             alarm, priority per image, in queue order
  GET  /api/image?id=ID      the image as an 8-bit PNG (display only)
  GET  /api/mask?id=ID       size, revision, saved mask and pre-label as
                             base64 class bytes (row-major, uint8)
  POST /api/save             {id, base_revision, base: saved|prelabel|empty,
                             operations: [...] (raster.py), seconds}
"""

from __future__ import annotations

import base64
import hmac
import http.server
import io
import json
import logging
import math
import secrets
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np
from PIL import Image

from chameleon_jax.data import overlays
from chameleon_jax.labelling import queue, raster, store as store_lib

TOKEN_HEADER = "X-Label-Token"
STATIC = {"label.js": "text/javascript; charset=utf-8",
          "raster.js": "text/javascript; charset=utf-8",
          "label.css": "text/css; charset=utf-8"}
BASES = ("saved", "prelabel", "empty")
DRAIN_BYTES = 256 << 20  # A refused body up to this size is read and dropped.


class LabelApp:
  """What the server serves: a store, the model's pre-labels, the palette.

  Args:
    store: the dataset's folders (store.LabelStore).
    colours: (K, 3) RGB per class (the overlays' palette).
    prelabels: image id -> queue.Prelabel (None or empty: no model).
    model_version: names the pre-labelling model in audit lines (None: no
      model).
    threshold: the decision threshold the queue orders around (the
      calibrated rule's seed threshold; 0.5 for argmax masks).
    max_request_bytes: the largest request body accepted.
    token: the session token (default: 32 random bytes, URL-safe).
  """

  def __init__(self, store: store_lib.LabelStore, colours: Sequence,
               prelabels: Mapping[str, queue.Prelabel] | None,
               model_version: str | None, threshold: float,
               max_request_bytes: int, token: str | None = None):
    self.store = store
    self.class_names = store.layout.class_names
    self.colours = [list(map(int, c)) for c in colours][:len(self.class_names)]
    self.prelabels = dict(prelabels or {})
    self.model_version = model_version
    self.threshold = float(threshold)
    self.max_request_bytes = int(max_request_bytes)
    self.token = token or secrets.token_urlsafe(32)

  def page(self) -> bytes:
    config = {"token": self.token, "classes": [
        {"name": n, "colour": c} for n, c in zip(self.class_names,
                                                 self.colours)],
              "model_version": self.model_version,
              "threshold": self.threshold,
              "max_request_bytes": self.max_request_bytes}
    text = resources.files(__package__).joinpath("static/index.html"
                                                 ).read_text()
    blob = json.dumps(config).replace("</", "<\\/")
    return text.replace("__LABEL_CONFIG__", blob).encode()

  def images(self) -> dict:
    self.store.refresh()
    ids = self.store.ids()
    revisions = {i: self.store.current_revision(i) for i in ids}
    labelled = {i: r != store_lib.NO_MASK for i, r in revisions.items()}
    rows = []
    for i in queue.order(ids, labelled, self.prelabels, self.threshold):
      p = self.prelabels.get(i)
      rows.append({"id": i, "labelled": labelled[i], "revision": revisions[i],
                   "score": None if p is None else round(p.score, 4),
                   "alarm": None if p is None else p.alarm,
                   "priority": None if p is None else round(
                       queue.priority(p, self.threshold), 4)})
    return {"images": rows, "threshold": self.threshold,
            "model_version": self.model_version}

  def image_png(self, image_id: str) -> bytes:
    shown = overlays.stretched_uint8(self.store.load_image(image_id))
    buffer = io.BytesIO()
    Image.fromarray(shown[:, :, 0] if shown.shape[2] == 1 else shown).save(
        buffer, format="PNG", compress_level=1)
    return buffer.getvalue()

  def mask(self, image_id: str) -> dict:
    height, width = self.store.image_size(image_id)
    saved, revision = self.store.read_mask(image_id)
    p = self.prelabels.get(image_id)
    encode = (lambda m: None if m is None else
              base64.b64encode(np.ascontiguousarray(m, np.uint8)).decode())
    return {"id": image_id, "height": height, "width": width,
            "revision": revision, "mask": encode(saved),
            "prelabel": encode(None if p is None else p.mask),
            "score": None if p is None else p.score,
            "alarm": None if p is None else p.alarm}

  def save(self, body: object) -> dict:
    """Paints and writes one label (the POST /api/save body).

    Raises:
      store.Refused: a malformed body, an unknown image, a bad operation
        (raster.LabelError as 400), a conflict (409): nothing written.
    """
    if not isinstance(body, dict):
      raise store_lib.Refused("the body must be a JSON object.")
    image_id = body.get("id")
    height, width = self.store.image_size(image_id)
    base_name = body.get("base")
    if base_name not in BASES:
      raise store_lib.Refused(f"base {base_name!r} is not one of {BASES}.")
    base_revision = body.get("base_revision")
    if not isinstance(base_revision, str):
      raise store_lib.Refused("base_revision (the revision the page loaded) "
                              "is missing.")
    try:
      operations = raster.validate(body.get("operations", []), height, width,
                                   len(self.class_names))
    except raster.LabelError as e:
      raise store_lib.Refused(f"{image_id!r}: {e}") from None
    prelabel = self.prelabels.get(image_id)
    if base_name == "saved":
      base, _ = self.store.read_mask(image_id)
      if base is None:
        raise store_lib.Refused(f"{image_id!r} has no saved mask to draw on.")
    elif base_name == "prelabel":
      if prelabel is None:
        raise store_lib.Refused(f"{image_id!r} has no pre-label.")
      base = prelabel.mask
    else:
      base = np.zeros((height, width), np.uint8)
    mask = raster.paint(base, operations)
    if prelabel is None:
      use = "none"
    elif base_name == "prelabel":
      use = "edited" if operations else "accepted"
    elif base_name == "empty":
      use = "rejected"
    else:  # Drawn on the saved mask: the pre-label was not the start.
      use = "not used"
    seconds = body.get("seconds")
    seconds = (round(min(max(float(seconds), 0.0), 86400.0), 1)
               if isinstance(seconds, (int, float)) and
               not isinstance(seconds, bool) and math.isfinite(seconds)
               else None)
    counts = store_lib.class_counts(mask, len(self.class_names))
    new = self.store.save(image_id, mask, base_revision, {
        "seconds": seconds, "prelabel": use,
        "model_version": self.model_version if prelabel is not None else None,
        "base": base_name, "operations": len(operations),
        "class_pixels": counts})
    return {"id": image_id, "revision": new, "prelabel": use,
            "defect_pixels": int(sum(counts[1:]))}


class _Handler(http.server.BaseHTTPRequestHandler):
  server: LabelServer
  protocol_version = "HTTP/1.1"

  def log_message(self, fmt, *args):  # Into logging, not stderr.
    logging.info("label tool: %s %s", self.address_string(), fmt % args)

  def _send(self, status: int, body: bytes, content_type: str) -> None:
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    self.send_header("X-Content-Type-Options", "nosniff")
    self.send_header("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' blob: data:")
    self.end_headers()
    self.wfile.write(body)

  def _json(self, status: int, payload: object) -> None:
    self._send(status, json.dumps(payload).encode(),
               "application/json; charset=utf-8")

  def _error(self, status: int, message: str) -> None:
    self._json(status, {"error": message})

  def _allowed(self) -> bool:
    """The Host header names this server; /api/ calls carry the token."""
    app = self.server.app
    if self.server.check_host and self.headers.get("Host") not in \
        self.server.hosts:
      self._error(403, f"Host {self.headers.get('Host')!r} is not this "
                  "label server.")
      return False
    if self.path.startswith("/api/") and not hmac.compare_digest(
        self.headers.get(TOKEN_HEADER, ""), app.token):
      logging.warning("label tool: %s %s without the session token refused.",
                      self.command, self.path)
      self._error(403, f"missing or wrong {TOKEN_HEADER} (the session token "
                  "of the page this server served).")
      return False
    return True

  def _run(self, action) -> None:
    try:
      action()
    except store_lib.Refused as e:
      self._error(e.status, str(e))
    except Exception as e:  # A bug must answer, not hang the page.
      logging.exception("label tool: %s %s failed", self.command, self.path)
      self._error(500, f"{type(e).__name__}: {e}")

  def _discard(self, length: int) -> None:
    """Reads and drops a refused body in small chunks (the client then
    reads the answer instead of a reset connection); a body over
    DRAIN_BYTES is not read at all and the connection is closed."""
    if length > DRAIN_BYTES:
      self.close_connection = True
      return
    while length > 0:
      chunk = self.rfile.read(min(length, 1 << 16))
      if not chunk:
        break
      length -= len(chunk)

  def do_GET(self):
    if not self._allowed():
      return
    url = urllib.parse.urlsplit(self.path)
    query = urllib.parse.parse_qs(url.query)
    image_id = query.get("id", [None])[0]
    app = self.server.app
    if url.path == "/":
      self._send(200, app.page(), "text/html; charset=utf-8")
    elif url.path.startswith("/static/") and url.path[8:] in STATIC:
      name = url.path[8:]
      data = resources.files(__package__).joinpath(f"static/{name}"
                                                   ).read_bytes()
      self._send(200, data, STATIC[name])
    elif url.path == "/api/images":
      self._run(lambda: self._json(200, app.images()))
    elif url.path == "/api/image":
      self._run(lambda: self._send(200, app.image_png(image_id), "image/png"))
    elif url.path == "/api/mask":
      self._run(lambda: self._json(200, app.mask(image_id)))
    else:
      self._error(404, f"no such page {url.path!r}.")

  def do_POST(self):
    # The body is read (or, refused by its size, drained) before anything
    # answers: on a kept-alive connection an unread body would be taken
    # for the next request.
    length = self.headers.get("Content-Length")
    if length is None or not length.isdigit():
      self.close_connection = True
      self._error(411, "Content-Length is required.")
      return
    limit = self.server.app.max_request_bytes
    if int(length) > limit:
      self._discard(int(length))
      self._error(413, f"request of {int(length)} bytes is over the limit of "
                  f"{limit} bytes (label.max_request_mb); nothing written.")
      return
    raw = self.rfile.read(int(length))
    if not self._allowed():
      return
    if self.path != "/api/save":
      self._error(404, f"no such endpoint {self.path!r}.")
      return
    origin = self.headers.get("Origin")
    if origin is not None and origin not in self.server.origins:
      self._error(403, f"Origin {origin!r} is not this label server.")
      return
    try:
      body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      self._error(400, f"the body is not JSON ({e}).")
      return
    self._run(lambda: self._json(200, self.server.app.save(body)))


class LabelServer(http.server.ThreadingHTTPServer):
  """Serves `app` on (host, port); port 0 picks a free one (`url`)."""
  daemon_threads = True

  def __init__(self, app: LabelApp, host: str, port: int):
    super().__init__((host, port), _Handler)
    self.app = app
    port = self.server_address[1]
    self.check_host = host not in ("0.0.0.0", "::", "")
    names = {host, "127.0.0.1", "localhost"}
    self.hosts = {f"{n}:{port}" for n in names}
    self.origins = {f"http://{h}" for h in self.hosts}
    self.url = f"http://{'127.0.0.1' if not self.check_host else host}:{port}/"
    self._thread: threading.Thread | None = None

  def start(self) -> LabelServer:
    """Serves in a daemon thread (tests, notebooks); `stop` ends it."""
    self._thread = threading.Thread(target=self.serve_forever, daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    self.shutdown()
    self.server_close()
