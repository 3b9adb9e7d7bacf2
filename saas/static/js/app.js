// htmx: swap every response, including 4xx/5xx, so forms with errors (422) and the
// friendly error pages show in place of the page that asked.
document.addEventListener("DOMContentLoaded", function () {
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "...", swap: true },
    ];
  }
});

// Boosted navigation swaps only the inside of <body>: carry over what lives outside it,
// the page's language and the CSRF token in <body hx-headers> (logging in rotates it).
document.addEventListener("htmx:beforeSwap", function (evt) {
  var html = evt.detail.serverResponse || "";
  if (!/^\s*(<!doctype html>\s*)?<html[\s>]/i.test(html)) return;  // a partial, not a page
  var doc = new DOMParser().parseFromString(html, "text/html");
  document.documentElement.lang = doc.documentElement.lang;
  var headers = doc.body.getAttribute("hx-headers");
  if (headers) document.body.setAttribute("hx-headers", headers);
});
