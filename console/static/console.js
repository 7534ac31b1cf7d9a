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

  // The first field of ``root`` whose value the server refused: marked aria-invalid, or
  // described by an error message (a group of checkboxes, "pick at least one role").
  function firstProblem(root) {
    var fields = root.querySelectorAll("input, select, textarea");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.type === "hidden" || field.disabled) { continue; }
      if (field.getAttribute("aria-invalid") === "true") { return field; }
      var described = (field.getAttribute("aria-describedby") || "").split(/\s+/);
      for (var j = 0; j < described.length; j++) {
        var note = described[j] && document.getElementById(described[j]);
        if (note && note.classList.contains("field-error")) { return field; }
      }
    }
    return null;
  }

  // After a panel (form, confirmation) opens, move focus into it: to the first field
  // with an error when the server refused the form, else to its heading. After a change
  // that replaced the focused button, move focus to the message saying what happened.
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    if (target && target.id === "panel" && target.firstElementChild) {
      var first = firstProblem(target) || target.querySelector("h2[tabindex]");
      if (first) { first.focus(); }
    }
    if (!document.activeElement || document.activeElement === document.body) {
      var message = document.querySelector("#messages .message");
      if (message) { message.setAttribute("tabindex", "-1"); message.focus(); }
    }
  });

  function closePanel(panel, focusInvite) {
    panel.innerHTML = "";
    var invite = focusInvite ? document.getElementById("invite-button") : null;
    (invite || document.getElementById("main")).focus();
  }

  // A panel above the Users table (not one that is the whole page: its Cancel leads
  // back where it came from, and Escape leaves it be).
  function openPanel() {
    var panel = document.getElementById("panel");
    return panel && !panel.hasAttribute("data-whole-page") ? panel : null;
  }

  // "Cancel" in a panel closes it in place instead of loading the page again.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("[data-close-panel]") : null;
    var panel = openPanel();
    if (link && panel && panel.contains(link)) {
      event.preventDefault();
      closePanel(panel, true);
    }
  });

  // Whether the person typed or ticked something in ``form`` that would be lost: a
  // field changed since the page came, or a form the server sent back with their input
  // (data-started: a refused invitation).
  function started(form) {
    if (form.hasAttribute("data-started")) { return true; }
    for (var i = 0; i < form.elements.length; i++) {
      var field = form.elements[i];
      if (field.type === "checkbox" || field.type === "radio") {
        if (field.checked !== field.defaultChecked) { return true; }
      } else if (field.tagName === "SELECT") {
        for (var j = 0; j < field.options.length; j++) {
          if (field.options[j].selected !== field.options[j].defaultSelected) { return true; }
        }
      } else if (field.type !== "hidden" && "defaultValue" in field &&
                 field.value !== field.defaultValue) {
        return true;
      }
    }
    return false;
  }

  // Escape in a panel whose form was started asks before throwing the input away: a
  // small choice in the panel (Keep editing, the safe one, has focus; Escape again is
  // Keep editing). Escape in any other panel closes it.
  function askBeforeDiscarding(panel, form) {
    var ask = panel.querySelector(".discard-choice");
    if (ask) { ask.querySelector("[data-keep]").focus(); return; }
    var back = document.activeElement;
    ask = document.createElement("div");
    ask.className = "discard-choice";
    ask.setAttribute("role", "alertdialog");
    ask.setAttribute("aria-labelledby", "discard-question");
    var question = document.createElement("p");
    question.id = "discard-question";
    question.textContent = form.getAttribute("data-discard") || "Discard the changes you started?";
    var buttons = document.createElement("div");
    buttons.className = "row-buttons";
    var keep = document.createElement("button");
    keep.type = "button";
    keep.className = "primary";
    keep.setAttribute("data-keep", "");
    keep.textContent = "Keep editing";
    var discard = document.createElement("button");
    discard.type = "button";
    discard.className = "danger";
    discard.textContent = "Discard";
    buttons.appendChild(keep);
    buttons.appendChild(discard);
    ask.appendChild(question);
    ask.appendChild(buttons);
    keep.addEventListener("click", function () {
      ask.remove();
      var field = back && back !== document.body && panel.contains(back) ? back : null;
      (field || form.querySelector("input:not([type=hidden]), select, textarea") || panel).focus();
    });
    discard.addEventListener("click", function () { closePanel(panel, true); });
    var heading = panel.querySelector("h2");
    if (heading) {
      heading.insertAdjacentElement("afterend", ask);
    } else {
      panel.insertBefore(ask, panel.firstChild);
    }
    keep.focus();
  }

  document.addEventListener("keydown", function (event) {
    var panel = openPanel();
    if (event.key !== "Escape" || !panel || !panel.firstElementChild) { return; }
    event.preventDefault();
    var ask = panel.querySelector(".discard-choice");
    if (ask) { ask.querySelector("[data-keep]").click(); return; }
    var forms = panel.querySelectorAll("form");
    for (var i = 0; i < forms.length; i++) {
      if (started(forms[i])) { askBeforeDiscarding(panel, forms[i]); return; }
    }
    closePanel(panel, false);
  });

  // Disclosures folded on a phone (the Users filters): open on a wide screen, closed on
  // a narrow one, where they would fill the first screen. Without script they stay open.
  var narrow = window.matchMedia ? window.matchMedia("(max-width: 700px)") : null;
  function fold() {
    var folds = document.querySelectorAll("details[data-fold-narrow]");
    for (var i = 0; i < folds.length; i++) { folds[i].open = !(narrow && narrow.matches); }
  }
  if (narrow) {
    fold();
    if (narrow.addEventListener) { narrow.addEventListener("change", fold); }
  }

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
