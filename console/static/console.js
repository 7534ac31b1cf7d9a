// The console's own script (no inline script anywhere: the CSP allows only this file
// and htmx). Progressive enhancement only: every page works without it.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx requests carry the session's CSRF token in a header (forms also carry it in a field).
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // After a panel (form, confirmation) opens, move focus into it; after a change that
  // replaced the focused button, move focus to the message saying what happened.
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    if (target && target.id === "panel" && target.firstElementChild) {
      var first = target.querySelector("[aria-invalid='true'], h2[tabindex]");
      if (first) { first.focus(); }
    }
    if (!document.activeElement || document.activeElement === document.body) {
      var message = document.querySelector("#messages .message");
      if (message) { message.setAttribute("tabindex", "-1"); message.focus(); }
    }
  });

  // "Cancel" in a panel closes it in place instead of loading the page again.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("[data-close-panel]") : null;
    var panel = document.getElementById("panel");
    if (link && panel && panel.contains(link)) {
      event.preventDefault();
      panel.innerHTML = "";
      var invite = document.getElementById("invite-button");
      (invite || document.getElementById("main")).focus();
    }
  });

  // Escape closes an open panel too.
  document.addEventListener("keydown", function (event) {
    var panel = document.getElementById("panel");
    if (event.key === "Escape" && panel && panel.firstElementChild) {
      panel.innerHTML = "";
      document.getElementById("main").focus();
    }
  });

  // The company-email warning, as the address is typed (the server refuses anyway).
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("input[data-allowed-domains]")) { return; }
    var allowed = input.getAttribute("data-allowed-domains").split(",").filter(Boolean);
    var warning = document.getElementById(input.id + "-warning");
    if (!warning) { return; }
    var at = input.value.lastIndexOf("@");
    var domain = at >= 0 ? input.value.slice(at + 1).trim().toLowerCase() : "";
    warning.hidden = !(allowed.length && domain && allowed.indexOf(domain) === -1);
  });
})();
