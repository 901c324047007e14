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
// reaches every control with a visible focus ring, and the page reads
// without sideways scrolling on a laptop and on a tablet.

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
		f := evalJS[focused](t, ctx, `(() => { const a = document.activeElement; if (!a || a === document.body) return {key: '', outline: false};
			const cs = getComputedStyle(a); return {key: window.__twKey(a), outline: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2}; })()`)
		if f.Key == "" {
			continue
		}
		if !f.Outline && !reached[f.Key] {
			t.Errorf("%s: %s has focus but no visible focus ring", page, f.Key)
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
