// The page's only script (the Content-Security-Policy allows no inline code):
// a strategy <select data-autosubmit> reloads the grid when it changes.
document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
