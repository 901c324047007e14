//go:build linux

package main

import (
	"archive/zip"
	"bytes"
	"database/sql"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

var words = strings.Fields("the till receipt payment card store cashier loyalty backup printer network update invoice total tax vat drawer scanner barcode price discount supplier order stock shelf refund voucher")

// makeCorpus writes real files of mixed types (fixed seed: the same corpus
// every run) in several folders.
func makeCorpus(dir string, nfiles int) error {
	rng := rand.New(rand.NewPCG(7, 11))
	folders := map[string][]string{
		"Accounts":          {"pdf", "csv", "docx", "txt"},
		"Accounts/2023":     {"pdf", "csv", "docx"},
		"Invoices":          {"pdf", "docx", "csv"},
		"Photos":            {"jpg", "png"},
		"Photos/Shopfront":  {"jpg", "png"},
		"Stock":             {"csv", "txt", "db", "docx"},
		"Reports":           {"pdf", "docx", "txt", "png"},
		"Source/till-app":   {"go", "c", "py", "txt"},
		"Source/till-app/x": {"c", "go"},
	}
	perFolder := max(1, (nfiles+len(folders)-1)/len(folders))
	for _, f := range slices.Sorted(maps.Keys(folders)) { // sorted: the same corpus every run
		exts := folders[f]
		d := filepath.Join(dir, f)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for i := range perFolder {
			ext := exts[i%len(exts)]
			if ext == "db" && i >= len(exts)*3 {
				ext = "csv" // three databases are enough
			}
			b, err := genFile(rng, ext)
			if err != nil {
				return err
			}
			name := fmt.Sprintf("%s %s %03d.%s", strings.ReplaceAll(filepath.Base(f), "-", " "), words[rng.IntN(len(words))], i, ext)
			if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func text(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(14) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()
}

func genFile(rng *rand.Rand, ext string) ([]byte, error) {
	size := 6<<10 + rng.IntN(60<<10)
	switch ext {
	case "txt":
		return text(rng, size), nil
	case "csv":
		var b bytes.Buffer
		b.WriteString("date,sku,description,qty,price,total\n")
		for b.Len() < size {
			q, p := 1+rng.IntN(9), rng.IntN(10000)
			fmt.Fprintf(&b, "2024-%02d-%02d,SKU%06d,%s %s,%d,%d.%02d,%d.%02d\n", 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(999999),
				words[rng.IntN(len(words))], words[rng.IntN(len(words))], q, p/100, p%100, q*p/100, q*p%100)
		}
		return b.Bytes(), nil
	case "pdf":
		return pdf(text(rng, size)), nil
	case "docx":
		return docx(text(rng, size*3))
	case "png", "jpg":
		w, h := 160+rng.IntN(200), 120+rng.IntN(150)
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		r0, g0 := rng.IntN(256), rng.IntN(256)
		for y := range h {
			for x := range w {
				img.Set(x, y, color.RGBA{uint8(r0 + x), uint8(g0 + y), uint8((x*y)/64 + rng.IntN(24)), 255})
			}
		}
		var b bytes.Buffer
		if ext == "png" {
			err := png.Encode(&b, img)
			return b.Bytes(), err
		}
		err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 85})
		return b.Bytes(), err
	case "db":
		return sqliteDB(rng)
	case "go":
		var b bytes.Buffer
		b.WriteString("package till\n\nimport \"fmt\"\n\n")
		for i := 0; b.Len() < size/3; i++ {
			fmt.Fprintf(&b, "// Total%d adds the %s lines.\nfunc Total%d(xs []int) int {\n\tt := 0\n\tfor _, x := range xs {\n\t\tt += x * %d\n\t}\n\tfmt.Println(\"%s\", t)\n\treturn t\n}\n\n",
				i, words[rng.IntN(len(words))], i, rng.IntN(100), words[rng.IntN(len(words))])
		}
		return b.Bytes(), nil
	case "c":
		var b bytes.Buffer
		b.WriteString("#include <stdio.h>\n\n")
		for i := 0; b.Len() < size/3; i++ {
			fmt.Fprintf(&b, "/* %s */\nint total_%d(const int *xs, int n) {\n\tint t = 0;\n\tfor (int i = 0; i < n; i++)\n\t\tt += xs[i] * %d;\n\treturn t;\n}\n\n",
				words[rng.IntN(len(words))], i, rng.IntN(100))
		}
		return b.Bytes(), nil
	case "py":
		var b bytes.Buffer
		for i := 0; b.Len() < size/3; i++ {
			fmt.Fprintf(&b, "def total_%d(xs):\n    \"\"\"%s\"\"\"\n    return sum(x * %d for x in xs)\n\n\n", i, words[rng.IntN(len(words))], rng.IntN(100))
		}
		return b.Bytes(), nil
	}
	return nil, fmt.Errorf("no generator for %s", ext)
}

func pdf(body []byte) []byte {
	var content bytes.Buffer
	content.WriteString("BT /F1 10 Tf 40 800 Td 12 TL\n")
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.NewReplacer("(", "", ")", "", "\\", "").Replace(line)
		fmt.Fprintf(&content, "(%s) '\n", line)
	}
	content.WriteString("ET\n")
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", content.Len(), content.String()),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	var offs []int
	for i, o := range objs {
		offs = append(offs, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	x := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, x)
	return b.Bytes()
}

func docx(body []byte) ([]byte, error) {
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	var doc strings.Builder
	doc.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>`)
	for _, p := range strings.Split(string(body), "\n") {
		fmt.Fprintf(&doc, "<w:p><w:r><w:t>%s</w:t></w:r></w:p>", p)
	}
	doc.WriteString("</w:body></w:document>")
	for _, f := range []struct{ name, body string }{
		{"[Content_Types].xml", `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>`},
		{"_rels/.rels", `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>`},
		{"word/document.xml", doc.String()},
	} {
		w, err := z.Create(f.name)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write([]byte(f.body)); err != nil {
			return nil, err
		}
	}
	err := z.Close()
	return b.Bytes(), err
}

// sqliteDB makes a small till database through modernc.org/sqlite.
func sqliteDB(rng *rand.Rand) ([]byte, error) {
	d, err := os.MkdirTemp("", "ransombench-db-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	p := filepath.Join(d, "till.db")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE sales (id INTEGER PRIMARY KEY, sku TEXT, description TEXT, qty INTEGER, cents INTEGER)`); err != nil {
		return nil, err
	}
	tx, err := db.Begin()
	if err != nil {
		return nil, err
	}
	for i := range 800 {
		if _, err := tx.Exec(`INSERT INTO sales (sku, description, qty, cents) VALUES (?, ?, ?, ?)`,
			fmt.Sprintf("SKU%06d", i), words[rng.IntN(len(words))]+" "+words[rng.IntN(len(words))], 1+rng.IntN(9), rng.IntN(100000)); err != nil {
			_ = tx.Rollback()
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// runHelper is the SQLite benign workload: many small transactions, each
// an insert, as a till writes its sales.
func runHelper(kind, path string, n int) error {
	if kind != "sqlite" {
		return fmt.Errorf("unknown helper %q", kind)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, sku TEXT, description TEXT, qty INTEGER, cents INTEGER)`); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(3, 5))
	for i := range n {
		if _, err := db.Exec(`INSERT INTO sales (sku, description, qty, cents) VALUES (?, ?, ?, ?)`,
			fmt.Sprintf("SKU%06d", i), words[rng.IntN(len(words))], 1+rng.IntN(9), rng.IntN(100000)); err != nil {
			return err
		}
	}
	return db.Close()
}
