// The passkey ceremonies of /ui/login and /ui/account: the pages' one script.
//
// Everything else on the pages is a plain form; a passkey needs the browser's WebAuthn
// API (navigator.credentials), which only a script can call. Each ceremony is two JSON
// requests to the API, around the authenticator:
//   1. POST .../options        -> {challenge_id, options}  (the server keeps the challenge)
//   2. navigator.credentials.create(options) or .get(options): the authenticator signs
//   3. POST ... {challenge_id, credential}  -> the passkey kept, or the session cookie set
// The options and the credential travel as WebAuthn Level 3's JSON forms: the browser's
// own helpers (parseCreationOptionsFromJSON, toJSON) where it has them, else the few
// base64url conversions below.
"use strict";

(function () {
  const supported =
    typeof window.PublicKeyCredential === "function" && !!navigator.credentials;

  function bytesFrom(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  function base64urlOf(buffer) {
    const text = String.fromCharCode(...new Uint8Array(buffer));
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map((item) => ({ ...item, id: bytesFrom(item.id) }));
  }

  function creationOptions(json) {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: bytesFrom(json.challenge),
      user: { ...json.user, id: bytesFrom(json.user.id) },
      excludeCredentials: descriptors(json.excludeCredentials),
    };
  }

  function requestOptions(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return {
      ...json,
      challenge: bytesFrom(json.challenge),
      allowCredentials: descriptors(json.allowCredentials),
    };
  }

  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") {
      return credential.toJSON();
    }
    const response = credential.response;
    const out = {
      id: credential.id,
      rawId: base64urlOf(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: base64urlOf(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      out.response.attestationObject = base64urlOf(response.attestationObject);
    }
    if (response.authenticatorData) {
      out.response.authenticatorData = base64urlOf(response.authenticatorData);
      out.response.signature = base64urlOf(response.signature);
      if (response.userHandle) {
        out.response.userHandle = base64urlOf(response.userHandle);
      }
    }
    return out;
  }

  // One JSON request to the API; its JSON answer, or an Error with the API's message.
  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const json = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      throw new Error(json.message || `the service answered ${answer.status}`);
    }
    return json;
  }

  function say(element, message) {
    element.textContent = message;
    element.hidden = false;
  }

  function refusal(error) {
    // The authenticator's refusals are DOMExceptions: the user cancelled, or no
    // passkey of this site is on the device (NotAllowedError), and so on.
    if (error instanceof DOMException) {
      return `The passkey was not used (${error.name}): try again, or use the password.`;
    }
    return error.message;
  }

  async function logIn(section) {
    const error = section.querySelector("[data-passkey-error]");
    error.hidden = true;
    try {
      const ceremony = await post("/sessions/passkey/options", {});
      const credential = await navigator.credentials.get({
        publicKey: requestOptions(ceremony.options),
      });
      await post("/sessions/passkey", {
        challenge_id: ceremony.challenge_id,
        credential: credentialJSON(credential),
      });
      window.location.assign(section.dataset.next || "/ui/account");
    } catch (failed) {
      say(error, refusal(failed));
    }
  }

  async function add(form) {
    const error = form.querySelector("[data-passkey-error]");
    error.hidden = true;
    const fields = new FormData(form);
    const reauthentication = { password: fields.get("password") };
    if (fields.get("code")) {
      reauthentication.code = fields.get("code");
    }
    try {
      const ceremony = await post("/account/passkeys/options", reauthentication);
      const credential = await navigator.credentials.create({
        publicKey: creationOptions(ceremony.options),
      });
      const body = {
        challenge_id: ceremony.challenge_id,
        credential: credentialJSON(credential),
      };
      if (fields.get("name")) {
        body.name = fields.get("name");
      }
      await post("/account/passkeys", body);
      // The page again, from the server, now listing the new passkey.
      window.location.hash = "passkeys";
      window.location.reload();
    } catch (failed) {
      say(error, refusal(failed));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const section of document.querySelectorAll("[data-passkey=login]")) {
      const button = section.querySelector("button");
      if (!supported) {
        continue; // the button stays hidden: this browser has no WebAuthn
      }
      button.hidden = false;
      button.addEventListener("click", () => logIn(section));
    }
    for (const form of document.querySelectorAll("form[data-passkey=add]")) {
      if (!supported) {
        say(form.querySelector("[data-passkey-error]"), "This browser cannot make passkeys.");
        continue;
      }
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        add(form);
      });
    }
  });
})();
