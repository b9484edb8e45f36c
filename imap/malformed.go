package imap

import (
	_ "unsafe" // go:linkname

	"github.com/emersion/go-imap/v2"
	_ "github.com/emersion/go-imap/v2/imapserver" // the variable below lives there
)

// libraryError is imapserver's answer to a command whose handling failed
// with an error that is neither an *imap.Error nor one of its own syntax
// errors: "NO [SERVERBUG] Internal server error". Its command parser
// returns such errors for malformed arguments it reads with helpers of its
// own: sequence sets ("0", "1:0", "x", "1,,2", numbers over 2^32), dates
// ("32-Jan-2020"), unknown SEARCH keys, SEARCH MODSEQ/UID/OLDER arguments
// and APPEND date-times (go-imap v2.0.0-beta.8). Those are the client's
// mistakes, which RFC 9051 §7.1.5 answers with BAD (ED-03: reject bad
// syntax); a client told SERVERBUG may retry the same command forever or
// report a server fault.
//
// hisp's sessions never let an error of their own reach imapserver
// unmapped (session.fail turns a store error into an *imap.Error; a real
// fault is "NO [SERVERBUG] Internal error", a different text), so the
// response is made a BAD [CLIENTBUG] once, here. What imapserver still
// logs through printfLogger keeps the parser's own message.
//
//go:linkname libraryError github.com/emersion/go-imap/v2/imapserver.internalServerErrorResp
var libraryError *imap.StatusResponse

func init() {
	if libraryError != nil {
		*libraryError = imap.StatusResponse{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
			Text: "Malformed command or arguments"}
	}
}
