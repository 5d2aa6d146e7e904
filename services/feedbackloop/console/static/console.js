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

  // While the review screen is open, renew the claim's lease before it runs out.
  var item = document.getElementById("item");
  if (item && item.dataset.renewUrl) {
    var renewing = false;
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
        return response.ok ? response.json() : null;
      }).then(function (reply) {
        var lease = document.getElementById("lease");
        if (reply && reply.held) {
          item.dataset.leaseExpires = String(reply.lease_expires_at);
          if (lease) lease.textContent = "lease until " + new Date(reply.lease_expires_at * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
        } else if (lease) {
          lease.textContent = "lease lost: another reviewer may have this item";
          lease.classList.add("late");
        }
      }).catch(function () { /* the next tick tries again */ }).finally(function () { renewing = false; });
    };
    window.setInterval(function () {
      var left = Number(item.dataset.leaseExpires) - Date.now() / 1000;
      if (left < 90) renew();
    }, 15000);
  }
})();
