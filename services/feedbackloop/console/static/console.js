// The console's keyboard and the review lease. No inline script anywhere (the CSP forbids it).
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx requests carry the CSRF token as a header, like the forms carry it as a field.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" ||
      (tag === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(target.type)) ||
      (target && target.isContentEditable);
  }

  function activates(target) {
    var tag = target && target.tagName;
    return tag === "BUTTON" || tag === "SUMMARY" || (tag === "A" && target.hasAttribute("href")) ||
      (tag === "INPUT" && ["button", "submit", "reset"].includes(target.type));
  }

  // j / k move through the screen's items (turns, similar feedback, queue rows).
  function move(step) {
    var items = Array.prototype.slice.call(document.querySelectorAll("[data-kb-item]"));
    if (!items.length) return;
    var current = items.indexOf(document.activeElement);
    var next = current < 0 ? (step > 0 ? 0 : items.length - 1) : Math.min(items.length - 1, Math.max(0, current + step));
    items.forEach(function (el) { el.classList.remove("kb-current"); });
    items[next].classList.add("kb-current");
    items[next].focus();
    items[next].scrollIntoView({ block: "nearest" });
  }

  function clickKey(key) {
    var el = document.querySelector('[data-key="' + key + '"]');
    if (!el) return false;
    if (el.type === "radio") { el.checked = true; el.focus(); } else { el.click(); }
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.metaKey || (event.ctrlKey && event.key !== "Enter")) return;
    var resolve = document.getElementById("resolve");
    if (typing(event.target)) {
      // In the correction or comment: Ctrl+Enter submits, Escape leaves the field.
      if (event.key === "Enter" && event.ctrlKey && resolve && resolve.contains(event.target)) {
        event.preventDefault();
        resolve.requestSubmit();
      } else if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    if (event.key === "j") { move(1); event.preventDefault(); return; }
    if (event.key === "k") { move(-1); event.preventDefault(); return; }
    if (event.key === "e") {
      var correction = document.getElementById("correction");
      if (correction) { correction.focus(); event.preventDefault(); }
      return;
    }
    if (event.key === "Enter") {
      // Enter on a focused button or link does what that control says (skip, release, open
      // the session); only elsewhere is it "submit the verdict".
      if (activates(event.target)) return;
      if (resolve) { event.preventDefault(); resolve.requestSubmit(); }
      return;
    }
    if (/^[0-9a-z]$/.test(event.key) && clickKey(event.key)) event.preventDefault();
  });

  // While the review screen is open, renew the claim's lease before it runs out. Every answer
  // of the renew endpoint is JSON: 200 renewed; 409 the item is no longer this reviewer's (lost:
  // say so and stop); 401 or 403 signed out or refused (say so and stop: renewing again cannot
  // help); anything else (the server down) may pass: say so and try again on the next tick.
  var item = document.getElementById("item");
  if (item && item.dataset.renewUrl) {
    var renewing = false;
    var timer = null;
    var lease = document.getElementById("lease");
    var notice = document.getElementById("lease-notice");
    var tell = function (text) {
      if (!notice) return;
      notice.textContent = text;
      notice.hidden = false;
    };
    var stop = function () {
      if (timer !== null) window.clearInterval(timer);
      timer = null;
    };
    var reason = function (reply, status) {
      return reply && typeof reply.error === "string" ? reply.error : "status " + status;
    };
    var renew = function () {
      if (renewing) return;
      renewing = true;
      var body = new URLSearchParams({ claim_id: item.dataset.claimId });
      fetch(item.dataset.renewUrl, {
        method: "POST",
        headers: { "X-CSRF-Token": csrfToken(), "Content-Type": "application/x-www-form-urlencoded" },
        body: body,
        credentials: "same-origin",
      }).then(function (response) {
        // A body that is not JSON (a proxy's error page) reads as no reply.
        return response.json().catch(function () { return null; }).then(function (reply) {
          return { status: response.status, reply: reply };
        });
      }).then(function (answer) {
        var reply = answer.reply;
        if (answer.status === 200 && reply && reply.held) {
          item.dataset.leaseExpires = String(reply.lease_expires_at);
          if (lease) lease.textContent = "lease until " + new Date(reply.lease_expires_at * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
          if (notice) notice.hidden = true;
        } else if (answer.status === 409 || (reply && reply.held === false)) {
          stop();
          if (lease) { lease.textContent = "lease lost"; lease.classList.add("late"); }
          tell("This item is no longer yours (" + reason(reply, answer.status) + "). A verdict sent now " +
            "is not recorded: reload the page to take the next item.");
        } else if (answer.status === 401 || answer.status === 403) {
          stop();
          tell("The lease could not be renewed (" + reason(reply, answer.status) + "). Reload the page " +
            "and sign in again before the lease ends, or the item goes to another reviewer.");
        } else {
          tell("The lease could not be renewed (" + reason(reply, answer.status) + "); trying again.");
        }
      }).catch(function () {
        tell("The console did not answer while renewing the lease; trying again.");
      }).finally(function () { renewing = false; });
    };
    timer = window.setInterval(function () {
      var left = Number(item.dataset.leaseExpires) - Date.now() / 1000;
      if (left < 90) renew();
    }, 15000);
  }
})();
