"use strict";
// A terminal screen drawn at the size it was recorded at (columns x rows), scaled down to
// fit the page: the replay viewer and the live view share it. Text only, never HTML.
window.lockgateTerminal = (function () {
  const LINE = 1.25; // line height, in em, as the stylesheet sets it
  const MIN_FONT = 6; // px: below this the text cannot be read; the box scrolls instead

  function fit(screen) {
    const cols = Number(screen.dataset.cols);
    const rows = Number(screen.dataset.rows);
    if (!cols || !rows) { return; }
    screen.style.fontSize = "";
    screen.style.maxWidth = "none"; // measured at full size, then kept within the page
    const base = parseFloat(window.getComputedStyle(screen).fontSize) || 13;
    screen.style.width = cols + "ch";
    screen.style.height = (rows * LINE) + "em";
    const style = window.getComputedStyle(screen);
    const padX = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    const padY = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    const natural = screen.getBoundingClientRect();
    const box = screen.parentElement || document.body;
    const roomX = box.clientWidth - padX;
    const top = natural.top + window.scrollY;
    const roomY = Math.max(window.innerHeight - top - padY - 12, window.innerHeight * 0.6);
    const scale = Math.min(1, roomX / (natural.width - padX), roomY / (natural.height - padY));
    screen.style.fontSize = Math.max(MIN_FONT, Math.floor(base * scale * 10) / 10) + "px";
    screen.style.maxWidth = "";
  }

  function draw(screen, frame) {
    screen.textContent = frame.lines.join("\n");
    const size = frame.width + "x" + frame.height;
    if (screen.dataset.size !== size) {
      screen.dataset.size = size;
      screen.dataset.cols = String(frame.width);
      screen.dataset.rows = String(frame.height);
      screen.title = "terminal " + size;
      fit(screen);
    }
  }

  window.addEventListener("resize", function () {
    for (const screen of document.querySelectorAll(".screen[data-size]")) { fit(screen); }
  });
  return { draw: draw };
})();
