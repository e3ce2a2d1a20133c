package post

// Stage names a step of one delivery, for measurement (Config.Trace). The stages of a send
// happen on the sender's node, the others on the recipient's.
type Stage uint8

const (
	StageRecord   Stage = iota + 1 // sender: the recipient's record is verified
	StageParts                     // sender: every part is quorum-stored
	StagePushed                    // sender: the notification went out (direct or anycast)
	StageAccepted                  // sender: the pending copy is quorum-stored ("accepted")
	StageReceived                  // recipient: the notification opened and verified
	StageFiled                     // recipient: durably in the local received set (OnFiled)
	StageLogged                    // recipient: the INBOX head naming it is quorum-stored
	StageDropped                   // recipient: the holders were told to drop the pending copy
)

var stageNames = [...]string{"", "record", "parts", "pushed", "accepted", "received", "filed", "logged", "dropped"}

func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "?"
}

// Stages lists every stage in order.
func Stages() []Stage {
	return []Stage{StageRecord, StageParts, StagePushed, StageAccepted, StageReceived, StageFiled, StageLogged, StageDropped}
}

func (n *Node) trace(id NotificationID, s Stage) {
	if n.cfg.Trace != nil {
		n.cfg.Trace(id, s)
	}
}
