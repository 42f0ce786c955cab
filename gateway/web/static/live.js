"use strict";
// The live view: screen frames from the session's WebSocket, shown as text.
(function () {
  const status = document.getElementById("live-status");
  const screen = document.getElementById("screen");
  if (!status || !screen) { return; }
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const url = scheme + "//" + window.location.host + "/api/v1/sessions/" +
    encodeURIComponent(status.dataset.session) + "/live";
  const socket = new WebSocket(url);
  let ended = false;
  socket.onopen = function () { status.textContent = "live"; };
  socket.onmessage = function (event) {
    const frame = JSON.parse(event.data);
    if (frame.ended) {
      ended = true;
      status.textContent = "session ended";
      return;
    }
    window.lockgateTerminal.draw(screen, frame);
  };
  socket.onclose = function () {
    if (!ended) { status.textContent = "disconnected"; }
  };
})();
