/* polyai-async load report: draws the charts described in #report-data with uPlot.
   The data are numbers and fixed labels prepared by polyai_async/load/_html.py; nothing here
   inserts HTML. */
(function () {
  "use strict";

  var HEIGHT = 260;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var drawn = [];

  function trim(number, digits) {
    return String(Number(number.toFixed(digits)));
  }

  // Seconds as "42 s" on a short run and "m:ss" on a long one (span: the axis's extent).
  function formatSeconds(v, span) {
    if (v == null) return "–";
    if ((span == null ? Math.abs(v) : span) < 120) return trim(v, 1) + " s";
    var m = Math.floor(v / 60);
    var s = Math.round(v - m * 60);
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function formatMs(v) {
    if (v == null) return "–";
    if (Math.abs(v) >= 1000) return trim(v / 1000, 2) + " s";
    if (Math.abs(v) >= 100) return trim(v, 0) + " ms";
    if (Math.abs(v) >= 10) return trim(v, 1) + " ms";
    return trim(v, 2) + " ms";
  }

  function formatRate(v, unit) {
    if (v == null) return "–";
    return trim(v, Math.abs(v) >= 100 ? 0 : 2) + unit;
  }

  // The spectrum's x is -log10(1 - p/100): 0 is 0 %, 1 is 90 %, 2 is 99 %, 3 is 99.9 % ...
  function formatPercentile(x) {
    if (x == null) return "–";
    var p = 100 * (1 - Math.pow(10, -x));
    var digits = Math.max(0, Math.ceil(x) - 1);
    return trim(p, Math.min(digits + 1, 6)) + " %";
  }

  // Round steps for a time axis in seconds: 1 s ... 30 s, then minutes, then hours.
  var SECOND_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400];

  function percentileSplits(u, axis, min, max) {
    var splits = [];
    // Only ticks inside the axis: one past its end was drawn outside the plot, clipped.
    for (var x = Math.max(0, Math.ceil(min)); x <= max + 1e-9; x++) splits.push(x);
    return splits;
  }

  function percentileRange(u, min, max) {
    return [0, Math.max(1, Math.ceil((max == null || !isFinite(max) ? 1 : max) - 1e-9))];
  }

  function percentileTick(x) {
    var labels = ["0 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %", "99.9999 %"];
    return labels[x] || formatPercentile(x);
  }

  function fromZero(u, min, max) {
    if (max == null || !isFinite(max) || max <= 0) return [0, 1];
    return [0, max * 1.08];
  }

  function tint(color) {
    return color + "22";
  }

  function build(spec, el) {
    var percentile = spec.xKind === "percentile";
    // "load": the offered load of a capacity search's steps (a rate or a concurrency).
    var load = spec.xKind === "load";
    var yFormat = spec.unit === "ms" ? formatMs : function (v) { return formatRate(v, spec.unit); };
    var xFormat = percentile
      ? formatPercentile
      : load
        ? function (v) { return formatRate(v, spec.xUnit || ""); }
        : formatSeconds;
    var axisColor = "#475569";
    var grid = { stroke: "#e2e8f0", width: 1 };
    var series = [
      {
        label: percentile ? "percentile" : load ? "offered load" : "time",
        value: function (u, v) { return xFormat(v); },
      },
    ];
    spec.series.forEach(function (s) {
      series.push({
        label: s.label,
        stroke: s.color,
        width: 2,
        dash: s.dash ? [6, 4] : undefined,
        fill: s.fill ? tint(s.color) : undefined,
        spanGaps: s.spanGaps,
        points: { show: s.points || spec.x.length < 2, size: s.points ? 9 : undefined },
        value: function (u, v) { return yFormat(v); },
      });
    });
    var opts = {
      width: Math.max(240, el.clientWidth),
      height: HEIGHT,
      series: series,
      scales: {
        // The spectrum's axis ends on a labelled decade (99 %, 99.9 % ...) past the data.
        x: percentile ? { time: false, range: percentileRange } : { time: false },
        y: { range: fromZero },
      },
      axes: [
        {
          stroke: axisColor,
          grid: grid,
          ticks: grid,
          splits: percentile ? percentileSplits : undefined,
          incrs: percentile || load ? undefined : SECOND_STEPS,
          values: function (u, splits) {
            if (percentile) return splits.map(percentileTick);
            if (load) return splits.map(xFormat);
            var span = u.scales.x.max;
            return splits.map(function (v) { return formatSeconds(v, span); });
          },
        },
        {
          stroke: axisColor,
          grid: grid,
          ticks: grid,
          size: 64,
          values: function (u, splits) { return splits.map(yFormat); },
        },
      ],
      // Room on the right for a tick label at the very end of the x axis ("99.9 %").
      padding: [12, 40, null, null],
      legend: { live: true },
      cursor: { points: { size: 6 } },
    };
    var columns = [spec.x];
    spec.series.forEach(function (s) { columns.push(s.values); });
    return new uPlot(opts, columns, el);
  }

  data.charts.forEach(function (spec) {
    var figure = document.querySelector('[data-chart="' + spec.id + '"]');
    var el = figure && figure.querySelector(".chart-canvas");
    if (!el || !spec.series.length) return;
    drawn.push({ el: el, plot: build(spec, el) });
    figure.setAttribute("data-rendered", "true");
  });

  var pending = null;
  window.addEventListener("resize", function () {
    if (pending) clearTimeout(pending);
    pending = setTimeout(function () {
      drawn.forEach(function (d) {
        d.plot.setSize({ width: Math.max(240, d.el.clientWidth), height: HEIGHT });
      });
    }, 100);
  });
})();
