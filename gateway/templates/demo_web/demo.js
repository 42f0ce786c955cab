// The demo console's live part: a WebSocket that ticks every second and echoes what is sent.
// Paths are relative so the page works at / and under a path prefix (/t/demo-web/).
(function () {
  "use strict";
  const state = document.getElementById("socket-state");
  const clock = document.getElementById("clock");
  const echoes = document.getElementById("echoes");
  const form = document.getElementById("echo-form");
  const input = document.getElementById("echo-text");
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);

  function show(text, cls) {
    state.textContent = text;
    state.className = cls;
  }

  socket.addEventListener("open", function () { show("connected", "ok"); });
  socket.addEventListener("close", function (event) {
    show("connection closed (" + event.code + ") - reload to reconnect", "bad");
  });
  socket.addEventListener("message", function (event) {
    const message = JSON.parse(event.data);
    if (message.type === "tick") {
      clock.textContent = message.time;
    } else if (message.type === "echo") {
      const item = document.createElement("li");
      item.textContent = message.text;
      echoes.prepend(item);
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (input.value && socket.readyState === WebSocket.OPEN) {
      socket.send(input.value);
      input.value = "";
    }
  });
})();
