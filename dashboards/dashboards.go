// Package dashboards is the SOC's data for Elasticsearch and Kibana: the ECS
// field list the collector's index templates are built from, the rendered
// templates for operators who install them by hand, and the Kibana saved
// objects. It is data only; the collector's Elasticsearch store renders and
// installs the templates (collector/store/elasticsearch).
package dashboards

import "embed"

// ECSFields is elasticsearch/ecs_fields.json: every ECS field the collector
// maps, with its ECS type and multi-fields, generated from the ECS field list
// by `go test ./collector/store/elasticsearch -run TestECSFields -update`.
//
//go:embed elasticsearch/ecs_fields.json
var ECSFields []byte

// Kibana holds the saved objects (kibana/*.ndjson), imported through Kibana's
// Saved Objects page or API (docs/soc.md).
//
//go:embed kibana/*.ndjson
var Kibana embed.FS
