// polysemy-bench report: sortable tables (click a column title; again to reverse). No dependencies.
"use strict";
(function () {
  function key(cell, numeric) {
    var raw = cell ? (cell.getAttribute("data-value") || cell.textContent).trim() : "";
    if (!numeric) return raw.toLowerCase();
    var x = parseFloat(raw);
    return isNaN(x) ? null : x;
  }
  function sortBy(table, index, numeric, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ka = key(a.cells[index], numeric), kb = key(b.cells[index], numeric);
      if (ka === null && kb === null) return 0;
      if (ka === null) return 1;   // rows without a value stay last
      if (kb === null) return -1;
      var order = ka < kb ? -1 : ka > kb ? 1 : 0;
      return descending ? -order : order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function init(table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, index) {
      th.addEventListener("click", function () {
        var numeric = th.getAttribute("data-sort") === "number";
        var descending = !th.classList.contains("sorted-desc");
        Array.prototype.forEach.call(heads, function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(descending ? "sorted-desc" : "sorted-asc");
        sortBy(table, index, numeric, descending);
      });
    });
  }
  function openTarget() {  // a link to a per-target table opens its <details>
    var el = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (el && el.tagName === "DETAILS") el.open = true;
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), init);
    openTarget();
  });
  window.addEventListener("hashchange", openTarget);
})();
