"use strict";
// Forms marked data-api send their fields as JSON to the API with the page's CSRF token;
// errors are shown as text (never HTML). Elements with data-expires count down.
(function () {
  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function api(url, method, body) {
    const response = await fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRF-Token": csrf(),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.status + " " + response.statusText;
      throw new Error(detail);
    }
    return data;
  }

  async function submit(form) {
    const error = form.querySelector("[data-error]");
    if (error) { error.textContent = ""; }
    const body = {};
    for (const [name, value] of new FormData(form).entries()) {
      if (value !== "") { body[name] = value; }
    }
    const split = form.dataset.split;
    if (split && body[split]) {
      const parts = body[split].split("|");
      body.target = parts[0];
      if (parts[1]) { body.account = parts[1]; }
    }
    try {
      const result = await api(form.dataset.api, form.dataset.method || "POST", body);
      if (form.dataset.done) {
        // Said on the reloaded page, so the person sees what the click did.
        const said = form.dataset.done.replace(/\{(\w+)\}/g, function (_, key) {
          return result && result[key] !== undefined ? String(result[key]) : "";
        });
        try { window.sessionStorage.setItem(FLASH, said); } catch (_) { /* private mode */ }
      }
      window.location.reload();
    } catch (err) {
      if (error) { error.textContent = err.message; }
    }
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.api) {
      event.preventDefault();
      submit(form);
    }
  });

  const FLASH = "lockgate.flash";

  function showFlash() {
    const box = document.getElementById("flash");
    let said = null;
    try {
      said = window.sessionStorage.getItem(FLASH);
      window.sessionStorage.removeItem(FLASH);
    } catch (_) { said = null; }
    if (box && said) {
      box.textContent = said;
      box.hidden = false;
    }
  }
  showFlash();

  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-expires]")) {
      const left = Math.max(0, Math.floor((Date.parse(el.dataset.expires) - now) / 1000));
      const h = Math.floor(left / 3600);
      const m = Math.floor((left % 3600) / 60);
      const s = String(left % 60).padStart(2, "0");
      el.textContent = left ? (h ? h + "h " : "") + m + "m " + s + "s" : "expired";
    }
  }
  tick();
  setInterval(tick, 1000);

  window.lockgate = { api: api };
})();
