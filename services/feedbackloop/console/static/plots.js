// The console's plots: every [data-plot] element names a <script type="application/json"> block
// ({"x": [epoch seconds], "series": [{"label", "values"}], "percent": bool}) and is drawn with
// uPlot. The page's figcaption or table carries the same numbers as text.
(function () {
  "use strict";

  var COLORS = ["#2450b2", "#b3261e", "#1f7a3a", "#8a4fbf", "#c77700", "#00838f", "#5b6475", "#d81b60", "#6d4c41", "#3949ab"];

  function readData(id) {
    var block = document.getElementById(id);
    if (!block) return null;
    try { return JSON.parse(block.textContent); } catch (e) { return null; }
  }

  function draw(el) {
    if (typeof uPlot === "undefined") return;
    var data = readData(el.getAttribute("data-plot"));
    if (!data || !data.x || !data.x.length) return;
    var bars = el.getAttribute("data-plot-kind") === "bars" && uPlot.paths && uPlot.paths.bars;
    var percent = Boolean(data.percent);
    var series = [{}];
    var columns = [data.x];
    data.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      series.push({
        label: s.label || "(none)",
        stroke: color,
        width: bars ? 0 : 2,
        fill: bars ? color + "cc" : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.8, 60] }) : undefined,
        points: { show: !bars && data.x.length < 40 },
        value: function (u, v) { return v == null ? "" : (percent ? (v * 100).toFixed(1) + "%" : String(v)); },
      });
      columns.push(s.values);
    });
    var opts = {
      width: Math.max(240, el.clientWidth || 480),
      height: Number(el.getAttribute("data-plot-height")) || 170,
      series: series,
      legend: { show: data.series.length > 1 || !bars },
      scales: { x: { time: true }, y: { range: percent ? [0, 1] : function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [
        {},
        { values: function (u, ticks) { return ticks.map(function (t) { return percent ? Math.round(t * 100) + "%" : String(t); }); } },
      ],
      cursor: { drag: { x: false, y: false } },
    };
    el.textContent = "";
    new uPlot(opts, columns, el);
  }

  function drawAll() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-plot]"), draw);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
