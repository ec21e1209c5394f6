package planner

import (
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/unsubscribe"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// personal returns what the planner adds to one recipient's message: the
// one-click unsubscribe link of the route's domain, with a token signed
// for the recipient, the brand and the request's communication type.
func (p *planner) personal(r *request, it *item) personal {
	u := r.route.DomainConfig.Unsubscribe
	if u.URL == "" {
		return personal{}
	}
	tok := p.unsub.Token(unsubscribe.Subject{
		Tenant: r.req.GetTenant(), Brand: r.req.GetBrand(), CommunicationType: r.req.GetCommunicationType(),
		Address: it.addr, MessageID: it.id, CampaignID: r.req.GetCampaignId(),
	})
	link := unsubscribe.URL(u.URL, tok)
	lu, _ := unsubscribe.Headers(link, u.Mailto, tok)
	return personal{unsubscribeURL: link, listUnsubscribe: lu}
}

// maxUnsubscribeBody bounds a one-click POST body; RFC 8058's is 26 bytes.
const maxUnsubscribeBody = 4096

// serveUnsubscribe answers the one-click POST of RFC 8058 §3.2 (and the
// confirmation page's form): a valid token with the List-Unsubscribe=
// One-Click body writes the suppression, honoured by every later send, and
// publishes an unsubscribed event. A forged or altered token is refused
// with 403 and changes nothing.
func (p *planner) serveUnsubscribe(w http.ResponseWriter, req *http.Request) {
	sub, err := p.unsub.Verify(req.PathValue("token"))
	if err != nil {
		p.refuseToken(w, err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxUnsubscribeBody+1))
	if err != nil || len(body) > maxUnsubscribeBody {
		http.Error(w, "request body unreadable or too large", http.StatusBadRequest)
		return
	}
	form, err := postForm(req.Header.Get("Content-Type"), body)
	if err != nil || !unsubscribe.IsOneClick(form) {
		// RFC 8058 §3.2: the POST carries List-Unsubscribe=One-Click.
		http.Error(w, "the body must be "+unsubscribe.PostBody+" (RFC 8058)", http.StatusBadRequest)
		return
	}
	ctx := req.Context()
	scope := mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND
	if sub.CommunicationType != "" {
		scope = mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE
	}
	now := p.now()
	sup := &mailwavev1.Suppression{
		Address: sub.Address, Tenant: sub.Tenant, Brand: sub.Brand, Scope: scope, CommunicationType: sub.CommunicationType,
		Reason: "unsubscribe", Origin: mailwavev1.Origin_ORIGIN_USER, CreatedAt: timestamppb.New(now),
		Evidence: map[string]string{"method": "one-click", "message_id": sub.MessageID, "campaign_id": sub.CampaignID},
	}
	if err := p.writeSuppression(ctx, sup); err != nil {
		p.log.Error("unsubscribe not stored", "err", err)
		http.Error(w, "unsubscribe could not be stored; please try again", http.StatusServiceUnavailable)
		return
	}
	ev := &mailwavev1.DeliveryEvent{
		EventId: events.NewID(), Kind: mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED, Origin: mailwavev1.Origin_ORIGIN_USER,
		MessageId: sub.MessageID, Tenant: sub.Tenant, Brand: sub.Brand, CommunicationType: sub.CommunicationType,
		CampaignId: sub.CampaignID, Recipient: sub.Address, Reason: "unsubscribe",
		Detail: "one-click unsubscribe (RFC 8058) from " + sub.Describe(), OccurredAt: timestamppb.New(now), CreatedAt: timestamppb.New(now),
	}
	// The same click twice is one event (the stream's duplicate window).
	msgID := "unsubscribe:" + mailwavev1.SuppressionKey(scope, sub.Tenant, sub.Brand, sub.CommunicationType, sub.Address)
	if _, err := p.rt.Pub.Publish(ctx, mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev, events.WithMsgID(msgID)); err != nil {
		// The suppression is stored, which is what the recipient asked
		// for; the event is worth a retry by the client.
		p.log.Error("unsubscribed event not published", "err", err)
		http.Error(w, "unsubscribed, but the event could not be recorded; please try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Unsubscribed: %s will receive no more %s.\n", sub.Address, sub.Describe())
}

func (p *planner) refuseToken(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, unsubscribe.ErrBadSignature) {
		code = http.StatusForbidden
	}
	http.Error(w, "this unsubscribe link is not valid", code)
}

// postForm reads an application/x-www-form-urlencoded or
// multipart/form-data body.
func postForm(ctype string, body []byte) (url.Values, error) {
	r, err := http.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	if ctype == "" {
		ctype = "application/x-www-form-urlencoded"
	}
	r.Header.Set("Content-Type", ctype)
	if strings.HasPrefix(ctype, "multipart/form-data") {
		if err := r.ParseMultipartForm(maxUnsubscribeBody); err != nil {
			return nil, err
		}
		return r.MultipartForm.Value, nil
	}
	if err := r.ParseForm(); err != nil {
		return nil, err
	}
	return r.PostForm, nil
}

var confirmPage = template.Must(template.New("confirm").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><form method="post" action="">
<p>Unsubscribe {{.Address}} from {{.What}}?</p>
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form></body></html>
`))

// serveUnsubscribePage answers a GET of the link (a person following it
// in a browser) with a page whose button posts the one-click form. A GET
// never unsubscribes: link scanners follow every link (RFC 8058 §1).
func (p *planner) serveUnsubscribePage(w http.ResponseWriter, req *http.Request) {
	sub, err := p.unsub.Verify(req.PathValue("token"))
	if err != nil {
		p.refuseToken(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = confirmPage.Execute(w, map[string]string{"Address": sub.Address, "What": sub.Describe()})
}
