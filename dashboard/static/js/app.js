// Small conveniences for every page (no framework, no CDN).
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-copy]");
  if (!target || !navigator.clipboard) return;
  navigator.clipboard.writeText(target.dataset.copy).then(() => {
    target.classList.add("copied");
    setTimeout(() => target.classList.remove("copied"), 1200);
  });
});

// Forms that ask before they act (roll back, revoke a token): the question is
// in data-confirm, as text. Never an inline onsubmit handler: the
// Content-Security-Policy forbids them, and a name interpolated into
// JavaScript is a script injection waiting to happen.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
