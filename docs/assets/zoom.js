// Click a figure to see it full size over the page; click again or press Escape to close.
// Without JavaScript the figure's link opens the image itself, so nothing depends on this file.
(function () {
  function close(box) { box.remove(); document.removeEventListener("keydown", box._onKey); }
  function open(href, alt) {
    var box = document.createElement("div");
    box.className = "mc-lightbox";
    var img = document.createElement("img");
    img.src = href; img.alt = alt || "";
    // Fit a figure wider than the window on the first view; a second click shows it at full size.
    img.onload = function () { if (img.naturalWidth > window.innerWidth) box.classList.add("mc-fit"); };
    box.appendChild(img);
    box.addEventListener("click", function (event) {
      if (event.target === img && box.classList.contains("mc-fit")) { box.classList.remove("mc-fit"); return; }
      close(box);
    });
    box._onKey = function (event) { if (event.key === "Escape") close(box); };
    document.addEventListener("keydown", box._onKey);
    document.body.appendChild(box);
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a.mc-zoom");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    var img = link.querySelector("img");
    open(link.getAttribute("href"), img && img.alt);
  });
})();
