/* tierwise dashboard: polls /dashboard/data and draws everything with the DOM and inline SVG.
   No framework, no build step, nothing fetched from elsewhere. */
(function () {
  "use strict";

  var REFRESH_MS = 10000;
  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#14b8a6", "#6366f1", "#f59e0b", "#ec4899", "#22c55e", "#0ea5e9", "#a855f7", "#ef4444"];
  var NONE_COLOR = "#9ca3af";
  var FLOOR = 0.7;

  var params = new URLSearchParams(window.location.search);
  var state = { since: params.get("since") || "24h", paused: false, timer: null, data: null, busy: false };

  // -- small helpers ------------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function h(tag, attrs) {
    var el = document.createElement(tag);
    apply(el, attrs);
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }

  function s(tag, attrs) {
    var el = document.createElementNS(SVG, tag);
    apply(el, attrs);
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }

  function apply(el, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") el.textContent = v;
      else if (k === "cls") el.setAttribute("class", v);
      else el.setAttribute(k, v);
    });
  }

  function add(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(el, c); }); return; }
    el.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

  function num(text) { return text === null || text === undefined ? 0 : Number(text); }

  function usd(text) {
    if (text === null || text === undefined) return "unpriced";
    var v = Number(text), a = Math.abs(v);
    if (a === 0) return "$0.00";
    if (a >= 1) return (v < 0 ? "-$" : "$") + a.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (a >= 0.01) return (v < 0 ? "-$" : "$") + a.toFixed(4);
    return (v < 0 ? "-$" : "$") + a.toFixed(6);
  }

  // a limit as configured: "$2", "$0.25"
  function usdPlain(text) {
    var v = Number(text);
    return "$" + (Number.isInteger(v) ? String(v) : String(Number(v.toFixed(6))));
  }

  function usdShort(v) {
    var a = Math.abs(v);
    if (a === 0) return "$0";
    if (a >= 1000) return "$" + (v / 1000).toFixed(a >= 10000 ? 0 : 1) + "k";
    if (a >= 1) return "$" + Number(v.toFixed(a >= 100 ? 0 : 2)).toString();
    return "$" + Number(v.toPrecision(3)).toString();
  }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " µs";
    if (v < 1000) return v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) + " ms";
    return (v / 1000).toFixed(2) + " s";
  }

  function pct(v) { return (Math.round(v * 10) / 10).toFixed(1) + "%"; }

  function count(n) { return Number(n).toLocaleString("en-US"); }

  function exact(el, value, text) {
    el.textContent = text;
    el.setAttribute("data-exact", value === null || value === undefined ? "" : String(value));
    return el;
  }

  // the top of an axis with four gridlines at round values
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var step = v / 4, p = Math.pow(10, Math.floor(Math.log10(step)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= step) return 4 * steps[i] * p;
    return 40 * p;
  }

  function tierColor(name) {
    var tiers = state.data ? state.data.tiers : [];
    for (var i = 0; i < tiers.length; i++) if (tiers[i].name === name) return PALETTE[i % PALETTE.length];
    return NONE_COLOR;
  }

  function pill(tier) {
    var el = h("span", { cls: "pill", text: tier || "—" });
    el.style.background = tierColor(tier);
    return el;
  }

  function swatch(color, extra) {
    var el = h("i", { cls: "swatch" + (extra ? " " + extra : "") });
    el.style.background = color;
    return el;
  }

  function utcTime(iso, withDate) {
    var d = new Date(iso);
    var t = d.toISOString();
    return withDate ? t.slice(5, 10) + " " + t.slice(11, 19) : t.slice(11, 19);
  }

  function widthOf(el, fallback) { return Math.max(280, Math.floor(el.clientWidth || fallback)); }

  // -- charts -------------------------------------------------------------------------------
  function axes(svg, m, w, hgt, yMax, fmt) {
    for (var i = 0; i <= 4; i++) {
      var y = m.top + hgt - (hgt * i) / 4;
      svg.appendChild(s("line", { x1: m.left, x2: m.left + w, y1: y, y2: y, stroke: i ? "#eef0f3" : "#d7dbe1" }));
      svg.appendChild(s("text", { x: m.left - 8, y: y + 4, "text-anchor": "end", text: fmt((yMax * i) / 4) }));
    }
  }

  function xLabels(svg, points, m, band, hgt, bucket) {
    var every = Math.max(1, Math.ceil(points.length / Math.max(2, Math.floor((band * points.length) / 64))));
    points.forEach(function (p, i) {
      if (i % every !== 0) return;
      var label = bucket === "hour" ? p.t.slice(11, 16) : p.t.slice(5, 10);
      svg.appendChild(s("text", { x: m.left + band * i + band / 2, y: m.top + hgt + 16, "text-anchor": "middle", text: label }));
    });
  }

  function drawSpend(d) {
    var box = clear($("chart-spend"));
    var legend = clear($("legend-spend"));
    var series = d.series, points = series.points;
    series.tiers.forEach(function (t) { legend.appendChild(h("span", null, swatch(tierColor(t)), t)); });
    var W = widthOf(box, 800), H = 230, m = { top: 10, right: 8, bottom: 24, left: 62 };
    var w = W - m.left - m.right, hgt = H - m.top - m.bottom;
    var svg = s("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "spend over time by tier" });
    var totals = points.map(function (p) { return num(p.cost_usd); });
    var yMax = niceMax(Math.max.apply(null, totals.concat([0])));
    axes(svg, m, w, hgt, yMax, usdShort);
    var band = points.length ? w / points.length : w;
    var barW = Math.max(1, Math.min(36, band * 0.72));
    points.forEach(function (p, i) {
      var y = m.top + hgt;
      var x = m.left + band * i + (band - barW) / 2;
      series.tiers.forEach(function (t) {
        var cell = p.by_tier[t];
        if (!cell) return;
        var v = num(cell.cost_usd);
        var bh = (v / yMax) * hgt;
        if (bh <= 0 && cell.requests > 0) bh = 1;
        if (bh <= 0) return;
        y -= bh;
        svg.appendChild(s("rect", { x: x, y: y, width: barW, height: bh, fill: tierColor(t), rx: barW > 6 ? 2 : 0 },
          s("title", { text: utcTime(p.t, true).slice(0, 11) + " UTC · " + t + ": " + usd(cell.cost_usd) + " (" + cell.requests + " requests)" })));
      });
    });
    xLabels(svg, points, m, band, hgt, series.bucket);
    if (!totals.some(function (v) { return v > 0; })) {
      svg.appendChild(s("text", { cls: "empty", x: m.left + w / 2, y: m.top + hgt / 2, "text-anchor": "middle", text: "no spend in this window" }));
    }
    box.appendChild(svg);
  }

  function drawSavings(d) {
    var box = clear($("chart-savings"));
    var legend = clear($("legend-savings"));
    var top = d.baseline_model;
    legend.appendChild(h("span", { title: "the same usage priced on " + top }, swatch("#9aa1ad", "dashed"), "baseline"));
    legend.appendChild(h("span", { title: "what was spent, classifier included" }, swatch("#4f46e5", "line"), "actual"));
    legend.appendChild(h("span", null, swatch("rgba(4,120,87,0.25)"), "saved"));
    var points = d.series.points;
    var base = 0, act = 0, xs = [];
    points.forEach(function (p) {
      base += num(p.baseline_cost_usd);
      act += num(p.baseline_cost_usd) - num(p.saved_usd);
      xs.push([base, act]);
    });
    var W = widthOf(box, 600), H = 210, m = { top: 12, right: 10, bottom: 24, left: 62 };
    var w = W - m.left - m.right, hgt = H - m.top - m.bottom;
    var svg = s("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "cumulative cost against the baseline" });
    var yMax = niceMax(Math.max(base, act, 0));
    axes(svg, m, w, hgt, yMax, usdShort);
    var band = points.length ? w / points.length : w;
    // cumulative totals at the end of each bucket, from zero at the window's start
    function X(i) { return m.left + band * (i + 1); }
    function Y(v) { return m.top + hgt - (v / yMax) * hgt; }
    if (points.length) {
      var start = [m.left + "," + Y(0)];
      var upper = start.concat(xs.map(function (v, i) { return X(i) + "," + Y(v[0]); }));
      var actual = start.concat(xs.map(function (v, i) { return X(i) + "," + Y(v[1]); }));
      svg.appendChild(s("polygon", { points: upper.concat(actual.slice().reverse()).join(" "), fill: "rgba(4,120,87,0.16)" }));
      svg.appendChild(s("polyline", { points: upper.join(" "), fill: "none", stroke: "#9aa1ad", "stroke-width": 2, "stroke-dasharray": "5 4" }));
      svg.appendChild(s("polyline", { points: actual.join(" "), fill: "none", stroke: "#4f46e5", "stroke-width": 2.2 }));
      var last = xs[xs.length - 1];
      if (last[0] > 0) {
        svg.appendChild(s("text", { x: m.left + 10, y: m.top + 14, "text-anchor": "start", fill: "#047857", "font-weight": "700", text: "saved " + usd(d.report.saved_usd) + " (" + pct(d.report.saved_pct) + ") against " + d.baseline_model }));
      }
    }
    xLabels(svg, points, m, band, hgt, d.series.bucket);
    if (!(base > 0)) {
      svg.appendChild(s("text", { cls: "empty", x: m.left + w / 2, y: m.top + hgt / 2, "text-anchor": "middle", text: "no priced requests in this window" }));
    }
    box.appendChild(svg);
  }

  function arc(cx, cy, r, a0, a1) {
    var large = a1 - a0 > Math.PI ? 1 : 0;
    var x0 = cx + r * Math.sin(a0), y0 = cy - r * Math.cos(a0);
    var x1 = cx + r * Math.sin(a1), y1 = cy - r * Math.cos(a1);
    return "M" + x0 + "," + y0 + " A" + r + "," + r + " 0 " + large + " 1 " + x1 + "," + y1;
  }

  function drawShare(d) {
    var box = clear($("chart-share"));
    var byTier = d.report.by_tier, total = d.report.total_requests;
    var names = Object.keys(byTier);
    var size = 150, cx = size / 2, cy = size / 2, r = 57, stroke = 20;
    var svg = s("svg", { width: size, height: size, viewBox: "0 0 " + size + " " + size, role: "img", "aria-label": "request share per tier" });
    svg.appendChild(s("circle", { cx: cx, cy: cy, r: r, fill: "none", stroke: "#eef0f3", "stroke-width": stroke }));
    var a = 0;
    names.forEach(function (t) {
      var n = byTier[t].requests;
      if (!total || !n) return;
      var span = (2 * Math.PI * n) / total;
      var path = n === total
        ? s("circle", { cx: cx, cy: cy, r: r, fill: "none", stroke: tierColor(t), "stroke-width": stroke })
        : s("path", { d: arc(cx, cy, r, a, a + span - 0.012), fill: "none", stroke: tierColor(t), "stroke-width": stroke });
      path.appendChild(s("title", { text: t + ": " + n + " requests (" + pct(byTier[t].pct) + ")" }));
      svg.appendChild(path);
      a += span;
    });
    svg.appendChild(s("text", { cls: "center-big", x: cx, y: cy + 4, "text-anchor": "middle", text: count(total) }));
    svg.appendChild(s("text", { cls: "center-small", x: cx, y: cy + 21, "text-anchor": "middle", text: "requests" }));
    box.appendChild(svg);
    var models = {};
    d.tiers.forEach(function (t) { models[t.name] = t.model; });
    var table = h("table", { cls: "share-legend", id: "share-table" });
    names.forEach(function (t) {
      var row = byTier[t];
      table.appendChild(h("tr", { "data-tier": t },
        h("td", null, swatch(tierColor(t))),
        h("td", null, h("b", { text: t }), h("span", { cls: "model", text: models[t] || "no tier (failed early)" })),
        h("td", { cls: "r num" }, exact(h("span", { cls: "requests" }), row.requests, count(row.requests))),
        h("td", { cls: "r num muted" }, exact(h("span", { cls: "pct" }), row.pct, pct(row.pct))),
        h("td", { cls: "r num" }, exact(h("span", { cls: "cost" }), row.cost_usd, usd(row.cost_usd)))));
    });
    if (!names.length) table.appendChild(h("tr", null, h("td", { cls: "empty-note", text: "no requests in this window" })));
    box.appendChild(table);
  }

  function latencyBlock(title, cell) {
    var block = h("div", { cls: "lat-block" }, h("h3", { text: title + (cell && cell.n ? " · " + count(cell.n) + " requests" : "") }));
    var top = cell && cell.p99 ? cell.p99 : 0;
    ["p50", "p95", "p99"].forEach(function (p) {
      var v = cell ? cell[p] : null;
      var bar = h("div", { cls: "bar" });
      var fill = h("i");
      fill.style.width = (top && v ? Math.max(2, (100 * v) / top) : 0) + "%";
      bar.appendChild(fill);
      block.appendChild(h("div", { cls: "lat-row" }, h("span", { cls: "p", text: p }), bar, h("span", { cls: "v", "data-p": p, text: ms(v) })));
    });
    return block;
  }

  function drawLatency(d) {
    var box = clear($("latency"));
    var dec = d.latency.decision_ms, up = d.latency.upstream_ms;
    var blocks = h("div", { cls: "lat" });
    var a = latencyBlock("Routing decision", dec.all); a.id = "lat-decision";
    var b = latencyBlock("Upstream (to headers)", up.all); b.id = "lat-upstream";
    blocks.appendChild(a); blocks.appendChild(b);
    box.appendChild(blocks);
    var table = h("table", { cls: "data", id: "latency-table" },
      h("thead", null,
        h("tr", null, h("th", { text: "" }), h("th", { cls: "r group", colspan: 2, text: "decision" }), h("th", { cls: "r group", colspan: 3, text: "upstream" })),
        h("tr", null, h("th", { text: "tier" }), h("th", { cls: "r", text: "p50" }), h("th", { cls: "r", text: "p99" }),
          h("th", { cls: "r", text: "p50" }), h("th", { cls: "r", text: "p95" }), h("th", { cls: "r", text: "p99" }))));
    var body = h("tbody");
    d.tiers.forEach(function (t) {
      var dc = dec.by_tier[t.name] || {}, uc = up.by_tier[t.name] || {};
      if (!dc.n && !uc.n) return;
      body.appendChild(h("tr", null, h("td", null, pill(t.name)), h("td", { cls: "r", text: ms(dc.p50) }), h("td", { cls: "r", text: ms(dc.p99) }),
        h("td", { cls: "r", text: ms(uc.p50) }), h("td", { cls: "r", text: ms(uc.p95) }), h("td", { cls: "r", text: ms(uc.p99) })));
    });
    table.appendChild(body);
    if (body.childNodes.length) box.appendChild(table);
  }

  function drawKeys(d) {
    var box = clear($("keys"));
    if (!d.keys.length) { box.appendChild(h("div", { cls: "empty-note", text: "no requests in this window" })); return; }
    var table = h("table", { cls: "data", id: "keys-table" },
      h("thead", null, h("tr", null, h("th", { text: "key" }), h("th", { cls: "r", text: "requests" }), h("th", { cls: "r", text: "spend" }),
        h("th", { cls: "r", text: "budget" }), h("th", { text: "used this period" }))));
    var body = h("tbody");
    d.keys.forEach(function (k) {
      var used = null;
      if (k.budget_usd !== null) {
        var frac = num(k.period_spent_usd) / num(k.budget_usd);
        var bar = h("div", { cls: "bar" + (frac >= 1 ? " over" : frac >= 0.8 ? " near" : "") });
        var fill = h("i");
        fill.style.width = Math.min(100, Math.max(frac > 0 ? 1.5 : 0, 100 * frac)) + "%";
        bar.appendChild(fill);
        used = h("div", { cls: "barcell" }, bar, h("span", { text: pct(100 * frac) }));
      }
      body.appendChild(h("tr", { "data-key": k.name },
        h("td", null, k.name === "(none)" ? h("span", { cls: "muted", text: "no key" }) : h("b", { text: k.name })),
        h("td", { cls: "r" }, exact(h("span", { cls: "requests" }), k.requests, count(k.requests))),
        h("td", { cls: "r" }, exact(h("span", { cls: "cost" }), k.cost_usd, usd(k.cost_usd))),
        h("td", { cls: "r muted", text: k.budget_usd === null ? "none" : usdPlain(k.budget_usd) + " / " + k.period }),
        h("td", null, used || h("span", { cls: "muted", text: "—" }))));
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  function drawQuality(d) {
    var box = clear($("quality"));
    var q = d.quality, tiers = d.tiers.map(function (t) { return t.name; });
    Object.keys(q.tiers).forEach(function (t) { if (tiers.indexOf(t) < 0) tiers.push(t); });
    $("quality-hint").textContent = "user feedback, 0–1 · target line at " + q.threshold;
    var table = h("table", { cls: "data", id: "quality-table" },
      h("thead", null, h("tr", null, h("th", { text: "tier" }), h("th", { text: "avg satisfaction" }), h("th", { cls: "r", text: "ratings" }),
        h("th", { cls: "r", text: "below " + q.threshold }), h("th", { cls: "r", text: "avg cost" }))));
    var body = h("tbody");
    tiers.forEach(function (t) {
      var row = q.tiers[t];
      var cell;
      if (row && row.avg_satisfaction !== null) {
        var bar = h("div", { cls: "bar" + (row.avg_satisfaction < q.threshold ? " over" : "") });
        var fill = h("i"); fill.style.width = 100 * row.avg_satisfaction + "%";
        fill.style.background = row.avg_satisfaction < q.threshold ? "" : tierColor(t);
        var mark = h("b"); mark.style.left = 100 * q.threshold + "%";
        bar.appendChild(fill); bar.appendChild(mark);
        cell = h("div", { cls: "barcell" }, bar, exact(h("span", { cls: "avg" }), row.avg_satisfaction, row.avg_satisfaction.toFixed(2)));
      } else {
        cell = h("span", { cls: "muted", text: "no ratings yet" });
      }
      body.appendChild(h("tr", { "data-tier": t },
        h("td", null, pill(t)), h("td", null, cell),
        h("td", { cls: "r" }, exact(h("span", { cls: "total" }), row ? row.total : 0, count(row ? row.total : 0))),
        h("td", { cls: "r" + (row && row.below_threshold ? " status-error" : " muted") }, exact(h("span", { cls: "below" }), row ? row.below_threshold : 0, String(row ? row.below_threshold : 0))),
        h("td", { cls: "r" }, exact(h("span", { cls: "cost" }), row ? row.avg_cost_usd : null, row && row.avg_cost_usd !== null ? usd(row.avg_cost_usd) : "—"))));
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  function share(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }

  function drawShadow(d) {
    var box = clear($("shadow"));
    var q = d.quality.shadow, run = d.shadow_runner;
    var hint = "shadow evaluation: share of judged requests where the cheaper tier's answer was at least as good as the reference's (both orders)";
    if (run) hint += " · sampling " + share(run.sample_rate) + " · today " + usd(run.spent_today_usd) + " of " + usdPlain(run.daily_budget_usd);
    $("shadow-hint").textContent = hint;
    if (!q || !q.overall.comparisons) {
      box.appendChild(h("div", { cls: "empty-note", id: "shadow-empty",
        text: run ? "no shadow verdicts in this window yet" : "shadow evaluation is off: [shadow] enabled = true turns it on" }));
      return;
    }
    var table = h("table", { cls: "data", id: "shadow-table" },
      h("thead", null, h("tr", null, h("th", { text: "tier" }), h("th", { text: "vs" }), h("th", { text: "quality retained" }),
        h("th", { cls: "r", text: "95% interval" }), h("th", { cls: "r", text: "judged" }), h("th", { cls: "r", text: "errors" }),
        h("th", { cls: "r", text: "shadow + judge cost" }))));
    var body = h("tbody");
    function row(key, name, r, cost) {
      var cell;
      if (r.quality_retained !== null) {
        var bar = h("div", { cls: "bar" });
        var fill = h("i"); fill.style.width = 100 * r.quality_retained + "%";
        fill.style.background = tierColor(name);
        var band = h("s"); band.style.left = 100 * r.interval_95[0] + "%";
        band.style.width = 100 * (r.interval_95[1] - r.interval_95[0]) + "%";
        bar.appendChild(fill); bar.appendChild(band);
        cell = h("div", { cls: "barcell" }, bar, exact(h("span", { cls: "retained" }), r.quality_retained, share(r.quality_retained)));
      } else {
        cell = h("span", { cls: "muted", text: "no verdict yet" });
      }
      var interval = r.interval_95 ? share(r.interval_95[0]) + " – " + share(r.interval_95[1]) : "–";
      return h("tr", { "data-tier": key },
        h("td", null, name === "all tiers" ? h("b", { text: name }) : pill(name)),
        h("td", { cls: "muted", text: r.reference_tier || "" }),
        h("td", null, cell),
        h("td", { cls: "r" }, exact(h("span", { cls: "interval" }), r.interval_95 ? r.interval_95.join(",") : "", interval)),
        h("td", { cls: "r" }, exact(h("span", { cls: "judged" }), r.judged, count(r.judged))),
        h("td", { cls: "r" + (r.errors ? " status-error" : " muted") }, exact(h("span", { cls: "errors" }), r.errors, String(r.errors))),
        h("td", { cls: "r" }, exact(h("span", { cls: "cost" }), cost, usd(cost))));
    }
    Object.keys(q.tiers).forEach(function (k) { body.appendChild(row(k, q.tiers[k].tier, q.tiers[k], q.tiers[k].cost_usd)); });
    body.appendChild(row("all", "all tiers", q.overall, q.cost_usd));
    table.appendChild(body);
    box.appendChild(table);
    box.appendChild(h("p", { cls: "shadow-net", id: "shadow-net" },
      "Routing saved ", exact(h("b", { id: "shadow-saved" }), q.saved_usd, usd(q.saved_usd)),
      "; shadow calls and judges cost ", exact(h("b", { id: "shadow-cost" }), q.cost_usd, usd(q.cost_usd)),
      ": net ", exact(h("b", { id: "shadow-net-saved" }), q.net_saved_usd, usd(q.net_saved_usd)),
      q.overall.unpriced ? " (" + q.overall.unpriced + " comparison(s) with an unknown cost left out)" : ""));
  }

  function drawRecent(d) {
    var box = clear($("recent"));
    $("recent-hint").textContent = d.recent.length ? "newest first · " + d.recent.length + " shown" : "";
    if (!d.recent.length) { box.appendChild(h("div", { cls: "empty-note", text: "no requests in this window" })); return; }
    var table = h("table", { cls: "data", id: "recent-table" },
      h("thead", null, h("tr", null, ["time (UTC)", "tier", "model", "classifier", "reason", "cost", "status", "feedback"].map(function (c, i) {
        return h("th", { cls: i === 5 || i === 7 ? "r" : null, text: c });
      }))));
    var body = h("tbody");
    d.recent.forEach(function (r) {
      var status = r.status === "ok"
        ? h("span", { cls: "status-ok", text: "ok" })
        : h("span", { cls: "status-error", text: (r.http_status || "error") + (r.error_type ? " " + r.error_type : "") });
      var classifier = r.classifier ? r.classifier + (r.confidence !== null && r.classifier !== "override" ? " · " + Number(r.confidence).toFixed(2) : "") : "—";
      body.appendChild(h("tr", { "data-request-id": r.request_id },
        h("td", { cls: "mono", title: r.ts + " · " + r.request_id, text: utcTime(r.ts, true) }),
        h("td", null, r.tier ? pill(r.tier) : h("span", { cls: "muted", text: "—" })),
        h("td", { cls: "mono", text: r.model || "—" }),
        h("td", { cls: "muted", text: classifier }),
        h("td", null, h("div", { cls: "reason", title: r.reason || "", text: r.reason || "—" })),
        h("td", { cls: "r" }, exact(h("span", { cls: "cost" }), r.cost_usd, r.cost_usd === null && r.status !== "ok" ? "—" : usd(r.cost_usd))),
        h("td", null, status),
        h("td", { cls: "r", text: r.feedback === null ? "—" : r.feedback.toFixed(2) })));
    });
    table.appendChild(body);
    box.appendChild(table);
  }

  function drawKpis(d) {
    var r = d.report;
    exact($("kpi-requests"), r.total_requests, count(r.total_requests));
    $("kpi-requests-sub").textContent = count(r.by_status.ok) + " ok · " + count(r.by_status.error) + " failed";
    exact($("kpi-cost"), r.total_cost_usd, usd(r.total_cost_usd));
    $("kpi-cost-sub").textContent = "classifier " + usd(r.classifier_cost_usd);
    exact($("kpi-baseline"), r.baseline_cost_usd, usd(r.baseline_cost_usd));
    $("kpi-baseline-sub").textContent = "if all " + d.baseline_model + (r.unpriced_requests ? " · " + r.unpriced_requests + " unpriced left out" : "");
    exact($("kpi-saved"), r.saved_usd, usd(r.saved_usd));
    exact($("kpi-saved-pct"), r.saved_pct, pct(r.saved_pct));
    var overall = d.quality.overall;
    var qEl = $("kpi-quality");
    exact(qEl, overall.avg_satisfaction, overall.avg_satisfaction === null ? "–" : overall.avg_satisfaction.toFixed(2));
    qEl.parentNode.className = "kpi" + (overall.avg_satisfaction !== null && overall.avg_satisfaction < FLOOR ? " kpi-bad" : "");
    $("kpi-quality-sub").textContent = overall.total ? count(overall.total) + " ratings · " + overall.below_threshold + " below " + d.quality.threshold : "no feedback yet";
    var dec = d.latency.decision_ms.all;
    $("kpi-decision").textContent = ms(dec.p50);
    $("kpi-decision-sub").textContent = dec.n ? "p95 " + ms(dec.p95) + " · p99 " + ms(dec.p99) : "no decisions yet";
    var notes = [];
    if (r.simulated_requests) notes.push(count(r.simulated_requests) + " request(s) were answered by the offline simulator.");
    if (r.unpriced_requests) notes.push(count(r.unpriced_requests) + " request(s) had no price for their model or baseline and are left out of the savings.");
    if (r.dropped_requests) notes.push(count(r.dropped_requests) + " request(s) never reached the ledger (queue full): the numbers miss them.");
    var box = $("notes");
    box.textContent = notes.join(" ");
    box.hidden = !notes.length;
  }

  function render(d) {
    state.data = d;
    $("badge-sim").hidden = !d.simulated_upstream;
    $("logout").hidden = !d.keys_required;
    drawKpis(d);
    drawSpend(d);
    drawShare(d);
    drawSavings(d);
    drawLatency(d);
    drawKeys(d);
    drawQuality(d);
    drawShadow(d);
    drawRecent(d);
    document.body.setAttribute("data-generated-at", d.generated_at);
    document.body.setAttribute("data-window", d.window);
  }

  // -- polling ------------------------------------------------------------------------------
  function setStatus(text, cls) {
    var el = $("updated");
    el.textContent = text;
    el.className = "updated" + (cls ? " " + cls : "");
  }

  function load() {
    if (state.busy) return;
    state.busy = true;
    var url = "/dashboard/data?since=" + encodeURIComponent(state.since);
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 401) { window.location.reload(); throw new Error("session ended"); }
        return resp.json().then(function (body) {
          if (!resp.ok) throw new Error(body.error || "HTTP " + resp.status);
          return body;
        });
      })
      .then(function (body) {
        render(body);
        $("error").hidden = true;
        setStatus("updated " + utcTime(body.generated_at) + " UTC" + (state.paused ? " · paused" : " · every " + REFRESH_MS / 1000 + " s"), state.paused ? "paused" : "");
      })
      .catch(function (err) {
        var box = $("error");
        box.textContent = "Could not load the data: " + err.message;
        box.hidden = false;
        setStatus("update failed", "failing");
      })
      .then(function () { state.busy = false; });
  }

  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = state.paused ? null : setInterval(function () { if (!document.hidden) load(); }, REFRESH_MS);
  }

  function selectWindow(since) {
    state.since = since;
    Array.prototype.forEach.call(document.querySelectorAll("#windows button"), function (b) {
      b.classList.toggle("active", b.getAttribute("data-since") === since);
    });
    var q = new URLSearchParams(window.location.search);
    q.set("since", since);
    window.history.replaceState(null, "", "?" + q.toString());
  }

  document.addEventListener("DOMContentLoaded", function () {
    selectWindow(state.since);
    Array.prototype.forEach.call(document.querySelectorAll("#windows button"), function (b) {
      b.addEventListener("click", function () { selectWindow(b.getAttribute("data-since")); load(); });
    });
    $("refresh-toggle").addEventListener("click", function () {
      state.paused = !state.paused;
      this.textContent = state.paused ? "Resume" : "Pause";
      schedule();
      if (!state.paused) load();
      else setStatus($("updated").textContent.replace(/ · every.*$/, "") + " · paused", "paused");
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () { if (state.data) render(state.data); }, 150);
    });
    document.addEventListener("visibilitychange", function () { if (!document.hidden && !state.paused) load(); });
    load();
    schedule();
  });
})();
