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
