// Passkeys (WebAuthn) in the console (console/passkeys.py): adding one on the Passkeys
// page, "Sign in with a passkey" on the sign-in page, "Use your passkey" on the code's
// page, and confirming it is you before removing a passkey or renewing recovery codes. Each asks the server for options (a challenge bound to this browser), hands them
// to the browser's authenticator, and sends its answer back. Where the browser has no
// WebAuthn the buttons stay hidden and the Passkeys page's form says it needs it.
(function () {
  "use strict";

  if (!window.PublicKeyCredential || !navigator.credentials) { return; }

  // The code's page's "Remember this browser" (console/remembered_devices.py), if ticked.
  function rememberTicked() {
    var box = document.getElementById("remember");
    return Boolean(box && box.checked);
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) { bytes[i] = binary.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // The server's JSON options, with their binary members as the browser wants them.
  function withIds(list) {
    return (list || []).map(function (c) {
      return { type: c.type, id: toBytes(c.id), transports: c.transports };
    });
  }

  function creationOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    options.excludeCredentials = withIds(options.excludeCredentials);
    return options;
  }

  function requestOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.allowCredentials = withIds(options.allowCredentials);
    return options;
  }

  // The browser's answer as JSON (WebAuthn's own JSON shape, binary members base64url).
  function answer(credential) {
    var r = credential.response;
    var json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      json.response.attestationObject = toText(r.attestationObject);
      json.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      json.response.authenticatorData = toText(r.authenticatorData);
      json.response.signature = toText(r.signature);
      json.response.userHandle = r.userHandle ? toText(r.userHandle) : null;
    }
    return json;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json, text/html",
        "X-CSRF-Token": csrfToken()
      },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (response.ok) { return response; }
      // Refusals are problem+json: say their detail.
      return response.json().catch(function () { return {}; }).then(function (problem) {
        throw new Error(problem.detail || problem.title || "Something went wrong; reload the page and try again");
      });
    });
  }

  function explain(error) {
    if (error && error.name === "NotAllowedError") {
      return "The passkey was not used: it was cancelled, or took too long.";
    }
    if (error && error.name === "InvalidStateError") {
      return "This passkey or security key is registered already.";
    }
    return (error && error.message) || "The passkey did not work; try again.";
  }

  function show(box, error) {
    if (!box) { return; }
    box.textContent = explain(error);
    box.hidden = false;
    box.focus();
  }

  // An answer that is a page of the console (its HTML), put in place of this one.
  function putPage(response) {
    return response.text().then(function (html) {
      var page = new DOMParser().parseFromString(html, "text/html");
      document.getElementById("main").replaceWith(page.getElementById("main"));
      document.title = page.title;
      var message = document.querySelector("#messages .message");
      if (message) { message.setAttribute("tabindex", "-1"); message.focus(); }
    });
  }

  // Adding a passkey: the answer is the Passkeys page itself, put in place of this one
  // (the recovery codes of a first factor are in it, shown this once).
  var add = document.getElementById("passkey-add");
  if (add) {
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      var box = document.getElementById("passkey-error");
      var name = add.elements.name.value;
      var button = add.querySelector("button[type=submit]");
      button.disabled = true;
      post(add.getAttribute("data-options"), { name: name })
        .then(function (response) { return response.json(); })
        .then(function (options) {
          return navigator.credentials.create({ publicKey: creationOptions(options) });
        })
        .then(function (credential) {
          return post(add.getAttribute("action"), { name: name, credential: answer(credential) });
        })
        .then(putPage)
        .catch(function (error) { button.disabled = false; show(box, error); });
    });
  }

  // Signing in (passwordless, or the second step): the session is set, then on to the
  // page. Confirming a change to one's own factors (removing a passkey, new recovery
  // codes): the answer is the page.
  var blocks = document.querySelectorAll("[data-passkey-block]");
  for (var i = 0; i < blocks.length; i++) { blocks[i].hidden = false; }
  var buttons = document.querySelectorAll("button[data-passkey-options]");
  Array.prototype.forEach.call(buttons, function (button) {
    button.addEventListener("click", function () {
      var box = document.getElementById("passkey-error");
      button.disabled = true;
      post(button.getAttribute("data-passkey-options"), {})
        .then(function (response) { return response.json(); })
        .then(function (options) {
          return navigator.credentials.get({ publicKey: requestOptions(options) });
        })
        .then(function (credential) {
          return post(button.getAttribute("data-passkey-verify"), {
            credential: answer(credential),
            next: button.getAttribute("data-next") || "",
            remember: rememberTicked()
          });
        })
        .then(function (response) {
          // A confirmed change answers with the page (new recovery codes shown once);
          // a sign-in with where to go next.
          if (button.getAttribute("data-passkey-answer") === "page") { return putPage(response); }
          return response.json().then(function (done) { window.location.assign(done.redirect); });
        })
        .catch(function (error) { button.disabled = false; show(box, error); });
    });
  });
})();
