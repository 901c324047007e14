package rules

//go:generate go run ./internal/pack
