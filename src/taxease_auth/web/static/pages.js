// Moves focus to the first field in error (the autofocus attribute does the same without
// script; some browsers skip it after a form POST). Loaded from 'self': the CSP allows no
// inline script.
document.addEventListener("DOMContentLoaded", function () {
  var first = document.querySelector('[aria-invalid="true"]');
  if (first && document.activeElement !== first) {
    first.focus();
  }
});
