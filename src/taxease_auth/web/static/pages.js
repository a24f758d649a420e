// What script adds to the pages (each works without it too). Loaded from 'self': the CSP
// allows no inline script.
document.addEventListener("DOMContentLoaded", function () {
  // Focus the first field in error (the autofocus attribute does the same without script;
  // some browsers skip it after a form POST).
  var first = document.querySelector('[aria-invalid="true"]');
  if (first && document.activeElement !== first) {
    first.focus();
  }

  // The resend cooldown counts down live; the button waits for it. Without script the page
  // says the seconds left when it was shown, and the server refuses an early resend.
  var hint = document.querySelector("[data-countdown]");
  if (!hint) {
    return;
  }
  var left = parseInt(hint.getAttribute("data-countdown"), 10);
  var button = document.querySelector('[aria-describedby="resend-hint"]');
  if (!(left > 0) || !button) {
    return;
  }
  button.disabled = true;
  var timer = setInterval(function () {
    var shown = String(left);
    left -= 1;
    if (left > 0) {
      hint.textContent = hint.textContent.replace(shown, String(left));
      return;
    }
    clearInterval(timer);
    hint.textContent = hint.getAttribute("data-ready");
    button.disabled = false;
  }, 1000);
});
