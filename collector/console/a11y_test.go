package console_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The console's accessible basics, checked on each page as the browser
// tests reach it: every control has an accessible name, the keyboard
// reaches every control with a visible focus ring of enough contrast, text
// and control borders have WCAG AA contrast, and the page reads without
// sideways scrolling on a laptop and on a tablet.

// viewports a page must be readable at: a 1280×800 laptop and an 820×1180
// tablet held upright.
var viewports = [][2]int64{{1280, 800}, {820, 1180}}

// controlRoles are the roles of what a person operates; each needs a name.
var controlRoles = map[string]bool{
	"button": true, "link": true, "textbox": true, "searchbox": true, "combobox": true, "listbox": true,
	"spinbutton": true, "checkbox": true, "radio": true, "switch": true, "slider": true, "menuitem": true, "tab": true,
}

// accessible runs every check on the page shown now.
func accessible(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	named(t, ctx, page)
	keyboard(t, ctx, page)
	contrast(t, ctx, page)
	readable(t, ctx, page)
}

// named asserts that Chromium's own accessibility tree gives every control
// a name: a label for inputs and selects, text for buttons and links.
func named(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	nodes, err := chromedp.Run(ctx, chromedp.Action[[]*accessibility.Node](func(ctx context.Context, tg *chromedp.Target) ([]*accessibility.Node, error) {
		r, err := cdp.Call(ctx, tg, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
		return r.Nodes, err
	}))
	if err != nil {
		t.Fatalf("%s: accessibility tree: %v", page, err)
	}
	str := func(v *accessibility.Value) string {
		if v == nil || len(v.Value) == 0 {
			return ""
		}
		var s string
		if json.Unmarshal(v.Value, &s) != nil {
			return string(v.Value)
		}
		return s
	}
	controls := 0
	for _, n := range nodes {
		role := str(n.Role)
		if n.Ignored || !controlRoles[role] {
			continue
		}
		controls++
		if strings.TrimSpace(str(n.Name)) == "" {
			t.Errorf("%s: a %s has no accessible name (DOM node %d)", page, role, n.BackendDOMNodeID)
		}
	}
	if controls == 0 {
		t.Errorf("%s: the accessibility tree has no controls at all", page)
	}
}

// focusables lists, as stable keys, the controls a keyboard must reach.
const focusables = `(() => {
	const key = (e) => e.tagName.toLowerCase() + ':' + (e.id || e.dataset.host || e.dataset.state || e.getAttribute('href') || e.name || e.textContent.trim().slice(0, 40));
	window.__twKey = key;
	const sel = 'a[href], button, input, select, textarea, [tabindex]';
	return [...document.querySelectorAll(sel)].filter((e) => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0 &&
		getComputedStyle(e).visibility !== 'hidden').map(key);
})()`

type focused struct {
	Key     string `json:"key"`
	Outline bool   `json:"outline"`
	// Ring is the focus ring's contrast with what is behind it (the
	// parent's effective background: the ring is drawn outside the
	// control); Colours names both for the message.
	Ring    float64 `json:"ring"`
	Colours string  `json:"colours"`
}

// keyboard presses Tab from the top of the page and asserts that focus
// reaches every control, each one with a visible focus ring.
func keyboard(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	want := evalJS[[]string](t, ctx, focusables)
	// Start from the top of the document: a focusable first child, focused
	// and removed, is where the next Tab starts.
	do(t, ctx, page+": focus the top", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.createElement('span'); s.tabIndex = -1;
		document.body.prepend(s); s.focus(); s.remove(); })()`))
	reached := map[string]bool{}
	// Date fields take a Tab per part (day, month, year, hour, minute):
	// allow several presses per control, and stop once all are reached.
	for range 6*len(want) + 10 {
		if len(reached) >= len(want) && containsAll(reached, want) {
			break
		}
		do(t, ctx, page+": Tab", chromedp.KeyEvent(kb.Tab))
		f := evalJS[focused](t, ctx, withColours(`(() => { const a = document.activeElement; if (!a || a === document.body) return {key: '', outline: false};
			const cs = getComputedStyle(a); const behind = effectiveBg(a.parentElement);
			const ring = over(parseColour(cs.outlineColor), behind);
			return {key: window.__twKey(a), outline: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2,
				ring: ratio(ring, behind), colours: css(ring) + ' on ' + css(behind)}; })()`))
		if f.Key == "" {
			continue
		}
		if !f.Outline && !reached[f.Key] {
			t.Errorf("%s: %s has focus but no visible focus ring", page, f.Key)
		}
		if f.Outline && !reached[f.Key] && f.Ring < minNonText {
			t.Errorf("%s: %s's focus ring has contrast %.2f:1 (%s), want at least %.0f:1", page, f.Key, f.Ring, f.Colours, minNonText)
		}
		reached[f.Key] = true
	}
	for _, k := range want {
		if !reached[k] {
			t.Errorf("%s: Tab never reaches %s (reached %d of %d controls)", page, k, len(reached), len(want))
		}
	}
}

func containsAll(m map[string]bool, keys []string) bool {
	for _, k := range keys {
		if !m[k] {
			return false
		}
	}
	return true
}

// WCAG 2.2 AA contrast minimums: normal text (1.4.3), large text (24 px,
// or 18.66 px bold), and what identifies a control or its focus (1.4.11).
const (
	minText    = 4.5
	minLarge   = 3.0
	minNonText = 3.0
)

// colourJS defines the colour helpers the contrast checks share: parsing
// a computed colour, alpha compositing, the element's effective background
// and the WCAG contrast ratio. The effective background walks up from the
// element, stacking every background with some opacity until an opaque
// one (the canvas is white); the console draws no background images, and
// one found is reported rather than guessed at.
const colourJS = `
const parseColour = (c) => {
	const m = /^rgba?\(([^)]*)\)$/.exec(c.trim());
	if (!m) throw new Error('cannot read the colour ' + c);
	const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
	return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (top, under) => {
	const a = top[3];
	return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
};
const effectiveBg = (e) => {
	const layers = [];
	for (let n = e; n && n.nodeType === 1; n = n.parentElement) {
		const cs = getComputedStyle(n);
		if (cs.backgroundImage !== 'none') throw new Error('a background image behind ' + n.tagName + ': contrast cannot be computed');
		const c = parseColour(cs.backgroundColor);
		if (c[3] > 0) layers.push(c);
		if (c[3] >= 1) break;
	}
	return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
};
const luminance = (c) => {
	const l = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
	return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
};
const ratio = (a, b) => {
	const x = luminance(a), y = luminance(b);
	return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
};
const css = (c) => '#' + c.slice(0, 3).map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');
`

// withColours evaluates expr with colourJS's helpers in scope (a scope of
// its own: the page keeps its globals, and the helpers can be defined on
// every call).
func withColours(expr string) string { return "(() => {" + colourJS + "return " + expr + "; })()" }

// contrastJS lists every visible text on the page (an element with text
// of its own, a form field's value or placeholder) and every control's
// boundary, with the contrast each has. Disabled controls are exempt, as
// in WCAG. A control is told apart from what surrounds it by its border
// or by its own background, whichever contrasts more.
var contrastJS = withColours(`(() => {
	const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility === 'visible' && !e.closest('[hidden]');
	const disabled = (e) => e.matches(':disabled') || !!e.closest(':disabled');
	const label = (e, text) => {
		const id = e.id ? '#' + e.id : '';
		const cls = typeof e.className === 'string' && e.className.trim() ? '.' + e.className.trim().split(/\s+/).join('.') : '';
		return e.tagName.toLowerCase() + id + cls + (text ? ' "' + text.slice(0, 40) + '"' : '');
	};
	const out = [];
	const text = (e, what, pseudo) => {
		const cs = getComputedStyle(e, pseudo);
		const bg = effectiveBg(e);
		const fg = over(parseColour(cs.color), bg);
		const size = parseFloat(cs.fontSize), weight = parseInt(cs.fontWeight, 10);
		const large = size >= 24 || (size >= 18.66 && weight >= 700);
		out.push({ what: label(e, what), kind: large ? 'large' : 'text', colours: css(fg) + ' on ' + css(bg), ratio: ratio(fg, bg) });
	};
	const field = 'input:not([type=checkbox]):not([type=radio]):not([type=hidden]), select, textarea';
	for (const e of document.body.querySelectorAll('*')) {
		if (!visible(e) || disabled(e)) continue;
		const own = [...e.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
		if (own) text(e, own);
		if (e.matches(field)) {
			if (e.value) text(e, e.value);
			else if (e.placeholder) text(e, 'placeholder ' + e.placeholder, '::placeholder');
		}
		if (e.matches(field + ', button')) {
			const cs = getComputedStyle(e);
			const around = effectiveBg(e.parentElement);
			const bg = over(parseColour(cs.backgroundColor), around);
			let best = ratio(bg, around), shown = css(bg) + ' background';
			if (cs.borderTopStyle !== 'none' && parseFloat(cs.borderTopWidth) >= 1) {
				const border = over(parseColour(cs.borderTopColor), around);
				if (ratio(border, around) > best) { best = ratio(border, around); shown = css(border) + ' border'; }
			}
			out.push({ what: label(e, ''), kind: 'control', colours: shown + ' on ' + css(around), ratio: best });
		}
	}
	return out;
})()`)

// contrasted is one text or control boundary and its contrast.
type contrasted struct {
	What    string  `json:"what"`
	Kind    string  `json:"kind"` // text, large (text) or control
	Colours string  `json:"colours"`
	Ratio   float64 `json:"ratio"`
}

// contrast asserts WCAG AA contrast for every visible text and control
// boundary on the page shown now, from the colours Chromium computed.
func contrast(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	need := map[string]float64{"text": minText, "large": minLarge, "control": minNonText}
	items := evalJS[[]contrasted](t, ctx, contrastJS)
	texts := 0
	for _, c := range items {
		if c.Kind != "control" {
			texts++
		}
		if c.Ratio < need[c.Kind] {
			t.Errorf("%s: %s (%s) has contrast %.2f:1 (%s), want at least %.1f:1", page, c.What, c.Kind, c.Ratio, c.Colours, need[c.Kind])
		}
	}
	if texts == 0 {
		t.Errorf("%s: no visible text found to check for contrast", page)
	}
}

// readable asserts that the page does not scroll sideways at any of the
// viewports, and leaves the browser at the first (the screenshots' size).
func readable(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	for i := len(viewports) - 1; i >= 0; i-- {
		w, h := viewports[i][0], viewports[i][1]
		do(t, ctx, page+": viewport", chromedp.EmulateViewport(w, h))
		// After a layout at the new size.
		if over := evalJS[int](t, ctx, `new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(() =>
			ok(document.documentElement.scrollWidth - window.innerWidth))))`); over > 0 {
			t.Errorf("%s at %d×%d scrolls sideways by %d px", page, w, h, over)
		}
	}
}

// keepsFocus focuses the element sel, waits for the page's next refresh
// and asserts that focus is still on (the new copy of) it.
func keepsFocus(t *testing.T, ctx context.Context, page, sel string) {
	t.Helper()
	before := evalJS[string](t, ctx, `(() => { document.querySelector('`+sel+`').focus(); return document.body.dataset.refreshes || '0'; })()`)
	waitJS(t, ctx, page+": refreshed", `(document.body.dataset.refreshes || '0') !== '`+before+`'`)
	if ok := evalJS[bool](t, ctx, `document.activeElement === document.querySelector('`+sel+`')`); !ok {
		t.Errorf("%s: a refresh took focus away from %s (now on %s)", page, sel,
			evalJS[string](t, ctx, `document.activeElement ? document.activeElement.outerHTML.slice(0, 80) : 'nothing'`))
	}
}

// enter presses Enter in the field sel (a form's implicit submission).
func enter(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(chromedp.Focus(chromedp.CSS(sel)), chromedp.KeyEvent(kb.Enter))
}
