// Small conveniences for every page (no framework, no CDN).
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-copy]");
  if (!target || !navigator.clipboard) return;
  navigator.clipboard.writeText(target.dataset.copy).then(() => {
    target.classList.add("copied");
    setTimeout(() => target.classList.remove("copied"), 1200);
  });
});

// Forms that change what serves ask first: <form data-confirm="question">.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (!form) return;
  const reason = form.querySelector("input[name=reason]");
  const why = reason && reason.value ? `\n\nReason: ${reason.value}` : "";
  if (!window.confirm(form.dataset.confirm + why)) event.preventDefault();
});
