// The server's painting rules (chameleon_jax/labelling/raster.py) in the
// page, for display: a brush covers the pixels whose centre lies within its
// radius of the stroke, exactly as the server paints it; polygons and boxes
// are previews (pixel centres inside) until the saved mask comes back.
// A grid is {data: Uint8Array(height * width) of classes, width, height}.
"use strict";

const Raster = (() => {
  function stroke(grid, points, radius, value) {
    const r2 = radius * radius;
    const n = points.length;
    const segments = n === 1 ? [[points[0], points[0]]] :
        points.slice(1).map((p, i) => [points[i], p]);
    for (const [a, b] of segments) {
      const x0 = Math.max(Math.floor(Math.min(a[0], b[0]) - radius), 0);
      const y0 = Math.max(Math.floor(Math.min(a[1], b[1]) - radius), 0);
      const x1 = Math.min(Math.ceil(Math.max(a[0], b[0]) + radius) + 1, grid.width);
      const y1 = Math.min(Math.ceil(Math.max(a[1], b[1]) + radius) + 1, grid.height);
      const dx = b[0] - a[0], dy = b[1] - a[1], len2 = dx * dx + dy * dy;
      for (let y = y0; y < y1; y++) {
        const cy = y + 0.5;
        for (let x = x0; x < x1; x++) {
          const cx = x + 0.5;
          let t = len2 === 0 ? 0 : ((cx - a[0]) * dx + (cy - a[1]) * dy) / len2;
          t = Math.min(Math.max(t, 0), 1);
          const ex = cx - a[0] - t * dx, ey = cy - a[1] - t * dy;
          if (ex * ex + ey * ey <= r2) grid.data[y * grid.width + x] = value;
        }
      }
    }
  }

  function polygon(grid, points, value) {  // A preview: pixel centres inside.
    const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
    const y0 = Math.max(Math.floor(Math.min(...ys)), 0);
    const y1 = Math.min(Math.ceil(Math.max(...ys)) + 1, grid.height);
    const x0 = Math.max(Math.floor(Math.min(...xs)), 0);
    const x1 = Math.min(Math.ceil(Math.max(...xs)) + 1, grid.width);
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const cx = x + 0.5, cy = y + 0.5;
        let inside = false;
        for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
          const [xi, yi] = points[i], [xj, yj] = points[j];
          if ((yi > cy) !== (yj > cy) &&
              cx < (xj - xi) * (cy - yi) / (yj - yi) + xi) inside = !inside;
        }
        if (inside) grid.data[y * grid.width + x] = value;
      }
    }
  }

  function paint(grid, op) {
    if (op.tool === "brush" || op.tool === "eraser") {
      stroke(grid, op.points, op.radius, op.tool === "eraser" ? 0 : op.class);
    } else if (op.tool === "polygon") {
      polygon(grid, op.points, op.class);
    } else if (op.tool === "box") {
      const [[ax, ay], [bx, by]] = op.points;
      polygon(grid, [[ax, ay], [bx, ay], [bx, by], [ax, by]], op.class);
    }
  }

  return {stroke, polygon, paint};
})();
