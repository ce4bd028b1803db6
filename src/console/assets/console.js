// alertrelay console: small progressive enhancement, loaded from this
// origin only (the Content-Security-Policy allows no inline script).
// Everything shown is set with textContent: never parsed as HTML.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons: the URL goes to the clipboard; it is never a link.
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      if (navigator.clipboard) {
        navigator.clipboard.writeText(b.dataset.copy);
      }
    });
  });

  // The queue: new incoming cases arrive as server-sent events.
  var queue = document.querySelector("#queue tbody");
  if (!queue || !window.EventSource) {
    return;
  }
  var baseTitle = document.title;
  var counter = document.getElementById("new-count");
  var fresh = 0;
  var seen = {};
  var source = new EventSource("/events");
  source.addEventListener("case", function (ev) {
    var c;
    try { c = JSON.parse(ev.data); } catch (e) { return; }
    var row = seen[c.case];
    if (!row) {
      row = document.createElement("tr");
      queue.insertBefore(row, queue.firstChild);
      seen[c.case] = row;
      fresh += 1;
      document.title = "(" + fresh + ") " + baseTitle;
      if (counter) {
        counter.textContent = fresh + " " + (counter.dataset.label || "new");
      }
      var empty = document.getElementById("empty");
      if (empty) { empty.remove(); }
    }
    row.textContent = "";
    row.className = c.priority === "urgent" ? "urgent" : "";
    var cells = ["0s", c.priority, null, c.category, c.country || "", c.network || "", c.origin, c.status];
    cells.forEach(function (text) {
      var td = document.createElement("td");
      if (text === null) {
        var a = document.createElement("a");
        a.href = c.href;
        a.textContent = c.case;
        td.appendChild(a);
      } else {
        td.textContent = text;
      }
      row.appendChild(td);
    });
  });
});
