// keygate console: small progressive enhancement. Never touches secrets or storage.
const exchange = document.getElementById("exchange");
if (exchange) {
  const update = () => {
    for (const el of document.querySelectorAll("[data-only]")) {
      el.hidden = !el.dataset.only.split(" ").includes(exchange.value);
    }
  };
  exchange.addEventListener("change", update);
  update();
}
for (const b of document.querySelectorAll("[data-copy]")) {
  b.addEventListener("click", () => {
    const src = document.getElementById(b.dataset.copy);
    if (src && navigator.clipboard) navigator.clipboard.writeText(src.textContent);
  });
}
for (const b of document.querySelectorAll("[data-confirm]")) {
  b.addEventListener("click", (e) => {
    if (!window.confirm(b.dataset.confirm)) e.preventDefault();
  });
}
// A table that scrolls sideways (narrow screens) must be reachable by keyboard.
for (const el of document.querySelectorAll(".scroll")) {
  if (el.scrollWidth > el.clientWidth) el.tabIndex = 0;
}
