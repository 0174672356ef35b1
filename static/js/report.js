// The printable report's Print button (a script file: the Content-Security-Policy allows no
// inline event handlers).
document.addEventListener("click", function (ev) {
  if (ev.target.closest && ev.target.closest("[data-print]")) window.print();
});
