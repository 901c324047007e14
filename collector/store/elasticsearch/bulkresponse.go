package elasticsearch

import (
	"io"

	"github.com/elastic/go-elasticsearch/v8/esutil"
	jsonv2 "github.com/go-json-experiment/json"
)

// BulkFilterPath trims each bulk response to what the store reads of an
// item: its status and error (collector/store/elasticsearch.classify). The
// full answer repeats _index, _id, _version, result, _shards, _seq_no and
// _primary_term for every document; decoding it with encoding/json was 23%
// of the collector's CPU at full ingest (the ingest benchmark), and the node spends less
// on writing it. Items keep their positions, which is how the bulk indexer
// matches them to documents. Exported so the ingest benchmark's bare
// indexer asks the node for the same answer.
var BulkFilterPath = []string{
	"errors",
	"items.*.status",
	"items.*.error.type", "items.*.error.reason",
	"items.*.error.caused_by.type", "items.*.error.caused_by.reason",
}

// bulkDecoder decodes bulk responses with github.com/go-json-experiment/json
// (already the collector's tokenizer for ingest) instead of encoding/json's
// reflection: the same struct, matched by exact member names as
// Elasticsearch writes them.
type bulkDecoder struct{}

var _ esutil.BulkResponseJSONDecoder = bulkDecoder{}

func (bulkDecoder) UnmarshalFromReader(r io.Reader, blk *esutil.BulkIndexerResponse) error {
	return jsonv2.UnmarshalRead(r, blk)
}
