// Small conveniences for every page (no framework, no CDN).
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-copy]");
  if (!target || !navigator.clipboard) return;
  navigator.clipboard.writeText(target.dataset.copy).then(() => {
    target.classList.add("copied");
    setTimeout(() => target.classList.remove("copied"), 1200);
  });
});
